//! `residency-guard serve`: the process wiring. Starts the watches
//! (`state`), the serving certificate (`tls`), the admission webhook and
//! admin endpoints (`webhook`) and, with `--audit`, the audit controller
//! (`audit`); on SIGTERM fails readiness, drains and hands the audit Lease
//! over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::audit;
use crate::datafiles::DataSources;
use crate::engine::Lang;
use crate::state;
use crate::tls::{self, self_managed};
use crate::webhook::{declassify, listener, metrics, server};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Create a CA and serving certificate, patch caBundle, rotate.
    SelfManaged,
    /// Read tls.crt/tls.key from --tls-dir (cert-manager or an existing Secret).
    Files,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(
        long,
        env = "RESIDENCY_GUARD_WEBHOOK_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_addr: SocketAddr,
    #[arg(
        long,
        env = "RESIDENCY_GUARD_ADMIN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_addr: SocketAddr,
    #[arg(long, env = "RESIDENCY_GUARD_TLS_MODE", value_enum, default_value_t = TlsMode::SelfManaged)]
    pub tls_mode: TlsMode,
    #[arg(
        long,
        env = "RESIDENCY_GUARD_TLS_DIR",
        default_value = "/etc/residency-guard/tls"
    )]
    pub tls_dir: PathBuf,
    /// How often files mode re-reads the certificate.
    #[arg(long, env = "RESIDENCY_GUARD_TLS_RELOAD_SECONDS", default_value_t = 10)]
    pub tls_reload_seconds: u64,
    #[arg(
        long,
        env = "RESIDENCY_GUARD_CERT_SECRET",
        default_value = "residency-guard-tls"
    )]
    pub cert_secret: String,
    /// The operator's own namespace (the chart sets it from the downward API).
    #[arg(
        long,
        env = "RESIDENCY_GUARD_NAMESPACE",
        default_value = "residency-guard"
    )]
    pub namespace: String,
    #[arg(
        long,
        env = "RESIDENCY_GUARD_SERVICE_NAME",
        default_value = "residency-guard"
    )]
    pub service_name: String,
    /// Extra certificate SANs (self-managed), e.g. the address in a URL-based
    /// webhook clientConfig.
    #[arg(
        long = "cert-extra-san",
        env = "RESIDENCY_GUARD_CERT_EXTRA_SANS",
        value_delimiter = ','
    )]
    pub cert_extra_sans: Vec<String>,
    /// ValidatingWebhookConfigurations whose caBundle is patched (self-managed).
    #[arg(
        long,
        env = "RESIDENCY_GUARD_WEBHOOK_CONFIGS",
        value_delimiter = ',',
        default_value = "residency-guard"
    )]
    pub webhook_configs: Vec<String>,
    #[arg(long, env = "RESIDENCY_GUARD_LANG", default_value = "en")]
    pub lang: String,
    #[arg(long, env = "RESIDENCY_GUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    #[arg(long, env = "RESIDENCY_GUARD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub data: DataSources,
    /// AdmissionReviews larger than this get HTTP 413 (the API server caps
    /// objects at 3 MiB; a review carries the object and the old object).
    #[arg(long, env = "RESIDENCY_GUARD_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Run the audit controller too: re-judge what already runs and write
    /// policy status, Events and reports (from the elected leader).
    #[arg(long, env = "RESIDENCY_GUARD_AUDIT", default_value_t = false)]
    pub audit: bool,
    /// Requests per second that admission reviews may make the operator
    /// send to the API server, all together (live confirmations and
    /// SubjectAccessReviews; burst: twice this). Over it the snapshot's
    /// answer stands and a declassification is refused retryably.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_API_REQUESTS_PER_SECOND",
        default_value_t = 20.0
    )]
    pub api_requests_per_second: f64,
    /// The same, for the reviews of one namespace (burst: five times this,
    /// at least 5).
    #[arg(
        long,
        env = "RESIDENCY_GUARD_API_REQUESTS_PER_NAMESPACE_PER_SECOND",
        default_value_t = 4.0
    )]
    pub api_requests_per_namespace_per_second: f64,
    /// The audit's full pass: everything is re-judged this often, and the
    /// reports are listed again so one deleted while its findings
    /// persist is written again within this period.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_AUDIT_RESYNC_SECONDS",
        default_value_t = 600
    )]
    pub audit_resync_seconds: u64,
    /// Which report APIs the audit writes its findings to: `auto` (each the
    /// API server serves, found at run time and looked for again every 15
    /// s while one is missing), `policyReport` (wgpolicyk8s.io/v1alpha2
    /// PolicyReports), `openReports` (openreports.io/v1alpha1 Reports) or
    /// `both`. The chart's `reports.kind` sets it and grants exactly these
    /// APIs.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_REPORTS_KIND",
        value_enum,
        default_value_t = audit::writer::ReportsKind::Auto
    )]
    pub reports_kind: audit::writer::ReportsKind,
    /// The audit leader labels the PersistentVolumeClaims classified objects
    /// mount with their data classes (added to, never removed), so the data
    /// at rest stays classified after the workload is gone.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_LABEL_CLAIMS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub label_claims: bool,
    /// This replica's identity for leader election (the chart sets the pod name).
    #[arg(
        long,
        env = "RESIDENCY_GUARD_POD_NAME",
        default_value = "residency-guard"
    )]
    pub pod_name: String,
    /// After SIGTERM, how long /readyz fails before the listener closes.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 5
    )]
    pub shutdown_delay_seconds: u64,
    /// The ClusterRole that grants `declassify` (the chart creates it),
    /// named in refusals so the fix can be copied.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_DECLASSIFIER_ROLE",
        default_value = "residency-guard-declassifier"
    )]
    pub declassifier_role: String,
    /// A watch failing for longer than this makes the snapshot stale: the
    /// operator reports not ready and refuses (retryably) to judge.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_STALE_AFTER_SECONDS",
        default_value_t = 30
    )]
    pub stale_after_seconds: u64,
    /// How long in-flight reviews may take to finish after that.
    #[arg(long, env = "RESIDENCY_GUARD_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// Webhook connections open at once; more are closed at accept.
    #[arg(long, env = "RESIDENCY_GUARD_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// A TLS handshake not finished in this time closes the connection.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_TLS_HANDSHAKE_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    pub tls_handshake_timeout_seconds: u64,
    /// Request headers not received in this time close the connection (also
    /// the longest a keep-alive connection stays idle between requests).
    #[arg(
        long,
        env = "RESIDENCY_GUARD_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub header_timeout_seconds: u64,
    /// Deadline for one request, reading its body and judging it (408 or
    /// 503 after it). The chart sets it to the webhook's timeoutSeconds.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub request_timeout_seconds: u64,
    /// Request bodies buffered by all requests in flight together; a request
    /// that does not fit gets 429 with Retry-After (the API server retries).
    #[arg(long, env = "RESIDENCY_GUARD_MAX_INFLIGHT_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,
    /// Webhook connections open at once from one source address (below
    /// --max-connections): one pod cannot take every connection.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 128
    )]
    pub max_connections_per_source: usize,
    /// Reviews in flight at once from one source address; more get 429
    /// with Retry-After.
    #[arg(
        long,
        env = "RESIDENCY_GUARD_MAX_INFLIGHT_REVIEWS_PER_SOURCE",
        default_value_t = 64
    )]
    pub max_inflight_reviews_per_source: usize,
    /// Source CIDRs (the API server's addresses, where known) exempt from
    /// the per-source caps, with --reserved-connections of their own.
    #[arg(
        long = "trusted-source-cidrs",
        env = "RESIDENCY_GUARD_TRUSTED_SOURCE_CIDRS",
        value_delimiter = ','
    )]
    pub trusted_source_cidrs: Vec<ipnet::IpNet>,
    /// Connections only trusted sources may use (with --trusted-source-cidrs).
    #[arg(
        long,
        env = "RESIDENCY_GUARD_RESERVED_CONNECTIONS",
        default_value_t = 128
    )]
    pub reserved_connections: usize,
    /// PEM of the CA that issued the API server's webhook client
    /// certificate: webhook clients without a certificate from it are
    /// refused at the TLS handshake (read at start-up). Set it only once
    /// the API server presents one (its AdmissionConfiguration).
    #[arg(long, env = "RESIDENCY_GUARD_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

impl ServeArgs {
    /// The webhook listener's limits from the flags (reads the client CA).
    pub fn limits(&self) -> Result<listener::Limits, tls::TlsError> {
        let client_ca = self
            .client_ca_file
            .as_deref()
            .map(tls::ClientCa::from_file)
            .transpose()?;
        Ok(listener::Limits {
            handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_seconds),
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            max_connections: self.max_connections,
            inflight_body_bytes: self.max_inflight_body_bytes,
            drain: Duration::from_secs(self.drain_seconds),
            max_connections_per_source: self.max_connections_per_source,
            max_inflight_per_source: self.max_inflight_reviews_per_source,
            trusted_sources: self.trusted_source_cidrs.clone(),
            reserved_connections: self.reserved_connections,
            client_ca,
        })
    }
}

pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Run until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format, &args.log_level);
    let lang = Lang::from_setting(&args.lang)?;
    let limits = args.limits()?;
    limits.validate(args.max_body_bytes)?;
    if let Some(ca) = &limits.client_ca {
        tracing::info!(client_ca = %ca.source, "webhook clients must present a certificate from this CA");
    }
    let (catalogue, address_space) = args.data.load()?;
    let data_age = args.data.address_data_age()?;
    let started = jiff::Timestamp::now();
    match data_age.warning(started) {
        // In the operator's language, and in both for log searches.
        Some(warning) => tracing::warn!(
            address_data = %crate::freshness::describe(&data_age, started),
            max_age_days = data_age.max_age_days,
            en = %warning.get(Lang::En),
            zh = %warning.get(Lang::ZhCn),
            "{}",
            warning.get(lang)
        ),
        None => tracing::info!(
            address_data = %crate::freshness::describe(&data_age, started),
            max_age_days = data_age.max_age_days,
            "mainland-China address data loaded"
        ),
    }
    let client = kube::Client::try_default().await?;
    // Which egress layers are served, and so watched: a kind whose CRD is
    // not served is absent, not "allow all".
    let egress = state::discover_egress(
        &client,
        args.data.egress_cni(),
        args.data.cilium_enforcement(),
    )
    .await?;
    tracing::info!(
        cni = egress.semantics.cni.as_str(),
        watched = ?egress.resources.iter().map(|r| r.kind).collect::<Vec<_>>(),
        "egress semantics"
    );
    let state = state::start(
        client.clone(),
        state::Inputs {
            catalogue,
            address_space,
            egress,
        },
    );
    state
        .health
        .set_stale_after(Duration::from_secs(args.stale_after_seconds.max(1)));
    let audit_metrics = audit::metrics::AuditMetrics::new();
    let exposure = crate::exposure::ExposureGauge::new();
    let certs = tls::CertStore::new();
    let metrics = metrics::Metrics::new_with(|registry| {
        registry.register_collector(Box::new(crate::freshness::AddressDataMetrics::new(
            data_age.clone(),
        )));
        state.health.register(registry);
        certs.register(registry);
        exposure.register(registry);
        if args.audit {
            audit_metrics.register(registry);
        }
    });
    let audit = if args.audit {
        let resync = Duration::from_secs(args.audit_resync_seconds.max(1));
        let cfg = audit::AuditConfig {
            plan: audit::plan::PlanConfig {
                lang,
                label_claims: args.label_claims,
                ..Default::default()
            },
            writer: audit::writer::WriterConfig {
                reporting_instance: args.pod_name.clone(),
                reports_kind: args.reports_kind,
                reports_recheck_every: resync,
                ..Default::default()
            },
            full_pass_every: resync,
            ..Default::default()
        };
        let lease = audit::leader::LeaseConfig {
            owner_service: Some(args.service_name.clone()),
            ..audit::leader::LeaseConfig::new(&args.namespace, &args.pod_name)
        };
        let audit = audit::spawn(client.clone(), &state, cfg, lease, audit_metrics);
        tracing::info!(identity = %args.pod_name, "audit controller started (writes only while leader)");
        Some(audit)
    } else {
        None
    };
    // Who else can run code in this namespace: asked once, in the
    // background; never blocks or fails start-up.
    tokio::spawn(crate::exposure::check(
        client.clone(),
        args.namespace.clone(),
        lang,
        exposure,
    ));
    match args.tls_mode {
        TlsMode::Files => {
            let files = tls::CertFiles::in_dir(&args.tls_dir);
            if let Err(e) = files.load_into(&certs) {
                tracing::warn!(error = %e, "no serving certificate yet; /readyz stays false until one appears");
            }
            let m = metrics.clone();
            tokio::spawn(files.watch(
                certs.clone(),
                Duration::from_secs(args.tls_reload_seconds.max(1)),
                move |ok| {
                    let outcome = if ok { "ok" } else { "error" };
                    m.cert_reloads
                        .get_or_create(&metrics::OutcomeLabels { outcome })
                        .inc();
                },
            ));
        }
        TlsMode::SelfManaged => {
            let cfg = self_managed::SelfManagedConfig {
                namespace: args.namespace.clone(),
                secret_name: args.cert_secret.clone(),
                service_name: args.service_name.clone(),
                webhook_configs: args.webhook_configs.clone(),
                extra_sans: args.cert_extra_sans.clone(),
                ..self_managed::SelfManagedConfig::default()
            };
            tokio::spawn(self_managed::run(client.clone(), cfg, certs.clone()));
        }
    }

    let serving = Arc::new(AtomicBool::new(true));
    let app = server::App {
        state,
        lang,
        metrics,
        max_body_bytes: args.max_body_bytes,
        serving: serving.clone(),
        certs,
        live: Some(Arc::new(state::live::ApiReader::new(client.clone()))),
        authorizer: Some(Arc::new(declassify::ApiAuthorizer::new(
            client.clone(),
            args.declassifier_role.clone(),
        ))),
        budget: Arc::new(crate::webhook::budget::LiveBudget::new(
            crate::webhook::budget::BudgetLimits::new(
                args.api_requests_per_second,
                args.api_requests_per_namespace_per_second,
            ),
        )),
    };
    let webhook_listener = server::bind(args.webhook_addr).await?;
    let admin_listener = server::bind(args.admin_addr).await?;
    tracing::info!(webhook = %args.webhook_addr, admin = %args.admin_addr, "residency-guard serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin = tokio::spawn(server::serve_admin(
        admin_listener,
        app.clone(),
        wait_stop(stop_rx.clone()),
    ));
    let webhook = tokio::spawn(listener::serve(
        webhook_listener,
        app,
        limits,
        wait_stop(stop_rx),
    ));

    shutdown_signal().await;
    // Fail readiness first so the Service stops sending new reviews, then
    // close the listener and let in-flight reviews finish.
    tracing::info!("shutdown: failing readiness");
    serving.store(false, Ordering::Relaxed);
    // Stop auditing and hand the Lease over now, not when it expires.
    let audit_down = audit.map(|a| tokio::spawn(a.shutdown(Duration::from_secs(5))));
    tokio::time::sleep(Duration::from_secs(args.shutdown_delay_seconds)).await;
    let _ = stop_tx.send(true);
    let _ = webhook.await;
    let _ = admin.await;
    if let Some(down) = audit_down {
        let _ = down.await;
    }
    tracing::info!("shutdown complete");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
