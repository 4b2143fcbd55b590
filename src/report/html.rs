//! The HTML: one self-contained file (inline CSS and SVG, no script, no
//! font or image from anywhere), readable on screen and printable to PDF.
//! It carries English and Simplified Chinese; `#en` / `#zh` at the end of
//! the address (or the links at the top) switch between them with CSS
//! `:target` alone, so it works offline and in a browser with scripts off.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::compare::Changes;
use super::model::{
    ClassSummary, Count, NodeEntry, Report, StorageEntry, ViolationEntry, VolumeEntry,
    WorkloadEntry,
};
use crate::api::{Action, DataClass};
use crate::engine::{BindingMode, Code, Lang, StoragePosture};

pub struct Options {
    /// SHA-256 of the JSON written in the same run.
    pub sha256: String,
    pub json_file: String,
    /// The language shown first.
    pub lang: Lang,
    /// Workloads shown in full.
    pub detail_limit: usize,
}

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The same thing in both languages (escaped).
fn bi(en: &str, zh: &str) -> String {
    format!(
        "<span class=\"en\">{}</span><span class=\"zh\">{}</span>",
        esc(en),
        esc(zh)
    )
}

fn jurisdiction_label(key: &str) -> (&'static str, &'static str) {
    match key {
        "mainland-china" => ("Mainland China", "中国大陆"),
        "hong-kong" => ("Hong Kong", "中国香港"),
        "macau" => ("Macau", "中国澳门"),
        "taiwan" => ("Taiwan", "中国台湾"),
        "foreign" => ("Outside China", "境外"),
        "pending" => ("Not scheduled", "未调度"),
        _ => ("Unverified", "无法核实"),
    }
}

fn jurisdiction_colour(key: &str) -> &'static str {
    match key {
        "mainland-china" => "#2e7d32",
        "hong-kong" => "#c62828",
        "macau" => "#ad1457",
        "taiwan" => "#6a1b9a",
        "foreign" => "#e65100",
        "pending" => "#bdbdbd",
        _ => "#616161",
    }
}

const JURISDICTION_ORDER: [&str; 7] = [
    "mainland-china",
    "hong-kong",
    "macau",
    "taiwan",
    "foreign",
    "unverified",
    "pending",
];

fn posture_label(p: &str) -> (&'static str, &'static str) {
    match p {
        "hostNetwork" => (
            "host network: bypasses NetworkPolicy",
            "主机网络：绕过 NetworkPolicy",
        ),
        "unrestricted" => (
            "unrestricted: no NetworkPolicy isolates egress",
            "不受限制：没有 NetworkPolicy 隔离出站流量",
        ),
        "allowsAll" => (
            "a rule allows every destination",
            "有规则允许访问所有目的地",
        ),
        "outsideMainland" => (
            "reaches addresses outside mainland China",
            "可访问中国大陆以外的地址",
        ),
        "outsideAllowed" => (
            "outside mainland China, approved in allowedCIDRs",
            "中国大陆以外，已在 allowedCIDRs 中批准",
        ),
        "mainland" => ("mainland China and the cluster only", "仅中国大陆和集群内"),
        "clusterOnly" => ("in-cluster only", "仅集群内"),
        _ => (
            "not checked: no governing policy restricts egress",
            "未检查：没有管辖策略限制出站",
        ),
    }
}

fn storage_label(p: StoragePosture) -> (&'static str, &'static str) {
    match p {
        StoragePosture::Outside => ("stored outside mainland China", "存储在中国大陆以外"),
        StoragePosture::Unknown => ("location cannot be established", "位置无法确定"),
        StoragePosture::NotGuaranteed => (
            "provisioning not guaranteed in mainland China",
            "制备位置无法保证在中国大陆",
        ),
        StoragePosture::Mainland => ("mainland China", "中国大陆"),
        StoragePosture::None => ("no volumes off the node", "无节点外存储卷"),
    }
}

fn storage_class_css(p: StoragePosture) -> &'static str {
    match p {
        StoragePosture::Mainland => "ok",
        StoragePosture::None => "note",
        _ => "out",
    }
}

fn storage_text(p: StoragePosture) -> String {
    let (en, zh) = storage_label(p);
    format!(
        "<span class=\"{}\">{}</span>",
        storage_class_css(p),
        bi(en, zh)
    )
}

fn code_label(c: Code) -> (&'static str, &'static str) {
    match c {
        Code::PlacementNotGuaranteed => ("placement not guaranteed", "调度位置无保证"),
        Code::NodeOutsideMainland => (
            "a matching node is outside mainland China",
            "匹配的节点不在中国大陆",
        ),
        Code::BoundToNodeOutside => (
            "a pod runs on a node outside mainland China",
            "Pod 运行在中国大陆以外的节点上",
        ),
        Code::EgressUnrestricted => ("egress unrestricted", "出站不受限制"),
        Code::EgressAllowsAll => ("an egress rule allows everything", "出站规则允许所有目的地"),
        Code::EgressOutsideMainland => (
            "egress reaches outside mainland China",
            "出站可达中国大陆以外",
        ),
        Code::EgressExternalForbidden => ("egress leaves the cluster", "出站可达集群以外"),
        Code::EgressNotGuaranteed => ("egress to a domain name", "出站可达未核实的域名"),
        Code::HostNetwork => ("host network", "主机网络"),
        Code::VolumeOutsideMainland => (
            "a volume is stored outside mainland China",
            "卷存储在中国大陆以外",
        ),
        Code::VolumeNotGuaranteed => (
            "where a volume is provisioned is not guaranteed",
            "卷的制备位置无保证",
        ),
        Code::StorageEndpointOutside => (
            "a storage server is outside mainland China",
            "存储服务器位于中国大陆以外",
        ),
        Code::ClassNotOnPodTemplate => (
            "the data class does not reach the pods",
            "数据类别未传递到 Pod",
        ),
    }
}

fn status_badge(status: &str) -> String {
    let (en, zh) = match status {
        "violating" => ("violating", "违规"),
        "exempted" => ("exempted", "已豁免"),
        _ => ("compliant", "合规"),
    };
    format!("<span class=\"badge {status}\">{}</span>", bi(en, zh))
}

fn action_text(a: Action) -> String {
    let zh = match a {
        Action::Deny => "拒绝",
        Action::Warn => "警告",
        Action::Audit => "审计",
    };
    bi(a.as_str(), &format!("{zh}（{}）", a.as_str()))
}

fn class_text(c: DataClass) -> String {
    format!(
        "<span class=\"class\" title=\"{}\">{}</span>",
        esc(c.describe_en()),
        bi(
            &format!("{} ({})", c.as_str(), c.describe_en()),
            &format!("{}（{}）", c.as_str(), c.describe_zh())
        )
    )
}

fn or_dash(s: Option<&str>) -> String {
    s.map_or_else(|| "—".to_string(), esc)
}

const CSS: &str = r#"
:root{--fg:#1a1a1a;--muted:#5f6368;--line:#d9dce1;--bg:#fff;--soft:#f5f6f8;--red:#b71c1c;--amber:#a15c00;--green:#1b5e20}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC","Source Han Sans SC","PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif}
.page{max-width:1180px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--fg)}
h3{font-size:15px;margin:18px 0 6px}
h4{font-size:13px;margin:12px 0 4px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
nav.lang{float:right;font-size:13px}
nav.lang a{color:#0b57d0;text-decoration:none;padding:2px 8px;border:1px solid var(--line);border-radius:4px;margin-left:4px}
.meta{color:var(--muted);margin:0 0 10px}
.digest{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:8px 12px;font-size:13px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Noto Sans Mono CJK SC",monospace;font-size:12px;word-break:break-all}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num,th.num{text-align:right;white-space:nowrap}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 14px}
.stat{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:120px}
.stat b{display:block;font-size:22px}
.stat.red b{color:var(--red)}.stat.amber b{color:var(--amber)}.stat.green b{color:var(--green)}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;white-space:nowrap}
.badge.violating{background:var(--red)}.badge.exempted{background:var(--amber)}.badge.compliant{background:var(--green)}
.workload{border:1px solid var(--line);border-left:5px solid var(--green);border-radius:6px;padding:8px 14px;margin:12px 0}
.workload.violating{border-left-color:var(--red)}.workload.exempted{border-left-color:var(--amber)}
.workload h3{margin:4px 0 6px}
.class{display:inline-block;background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:0 6px;margin:0 4px 2px 0;font-size:12px}
.msg{background:var(--soft);border-radius:4px;padding:6px 10px;margin:4px 0 8px;font-size:12.5px;white-space:pre-wrap}
.note{color:var(--muted);font-size:12.5px}
.out{color:var(--red);font-weight:600}
.ok{color:var(--green);font-weight:600}
.legend span.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin:0 4px 0 12px;vertical-align:-1px}
svg text{font-family:inherit;font-size:12px;fill:var(--fg)}
.zh{display:none}
#zh:target~.page .zh{display:revert}
#zh:target~.page .en{display:none}
footer{margin-top:36px;padding-top:10px;border-top:1px solid var(--line);color:var(--muted);font-size:12.5px}
@page{size:A4;margin:14mm}
@media print{nav.lang{display:none}.page{max-width:none;padding:0}body{font-size:10.5pt}h2{break-after:avoid}tr,.stat{break-inside:avoid}}
"#;

/// The CSS with `lang` shown first.
fn css(lang: Lang) -> String {
    match lang {
        Lang::En => CSS.to_string(),
        Lang::ZhCn => CSS
            .replace(
                ".zh{display:none}\n#zh:target~.page .zh{display:revert}\n#zh:target~.page .en{display:none}",
                ".en{display:none}\n#en:target~.page .en{display:revert}\n#en:target~.page .zh{display:none}",
            ),
    }
}

pub fn render(report: &Report, opts: &Options) -> String {
    let mut h = String::with_capacity(64 * 1024 + report.workloads.len() * 1024);
    let html_lang = match opts.lang {
        Lang::En => "en",
        Lang::ZhCn => "zh-CN",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"{html_lang}\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"generator\" content=\"{} {}\">\n<meta name=\"report-sha256\" content=\"{}\">\n<title>Data residency report · 数据驻留报告 · {}</title>\n<style>{}</style>\n</head>\n<body>\n<div id=\"zh\"></div><div id=\"en\"></div>\n<div class=\"page\">\n",
        esc(report.scope.tool.name),
        esc(report.scope.tool.version),
        esc(&opts.sha256),
        esc(&report.generated_at),
        css(opts.lang)
    );
    header(&mut h, report, opts);
    scope(&mut h, report);
    summary(&mut h, report);
    if let Some(changes) = &report.changes {
        changes_section(&mut h, changes);
    }
    workloads(&mut h, report, opts.detail_limit);
    coverage(&mut h, report);
    exemptions(&mut h, report);
    let _ = write!(
        h,
        "<footer><p>{}</p><p>{}</p></footer>\n</div>\n</body>\n</html>\n",
        bi(
            &format!(
                "To check this page against its data: sha256sum {} must print {}. The JSON holds every workload; its schema is docs/report.schema.json.",
                opts.json_file, opts.sha256
            ),
            &format!(
                "核对本页与数据是否一致：sha256sum {} 应输出 {}。JSON 包含全部工作负载，其结构见 docs/report.schema.json。",
                opts.json_file, opts.sha256
            )
        ),
        bi(
            "Geolocation data is evidence, not proof. Storage is placed by the topology labels and node affinity of PersistentVolumes, the binding mode and allowedTopologies of StorageClasses, and the addresses of storage servers; a server named by host name cannot be placed offline.",
            "地理位置数据是证据而非定论。存储位置依据 PersistentVolume 的拓扑标签和节点亲和性、StorageClass 的绑定模式和 allowedTopologies，以及存储服务器的地址判定；以主机名指定的服务器无法离线确定位置。"
        )
    );
    h
}

fn header(h: &mut String, report: &Report, opts: &Options) {
    let s = &report.scope;
    let (what_en, what_zh) = match (&s.cluster, &s.manifests) {
        (Some(c), _) => (
            format!("cluster {}", c.server),
            format!("集群 {}", c.server),
        ),
        (None, Some(m)) => (
            format!("{} manifest files", m.files.len()),
            format!("{} 个清单文件", m.files.len()),
        ),
        _ => (String::new(), String::new()),
    };
    let _ = write!(
        h,
        "<nav class=\"lang\"><a href=\"#en\" lang=\"en\">English</a><a href=\"#zh\" lang=\"zh-CN\">简体中文</a></nav>\n<h1>{}</h1>\n<p class=\"meta\">{}</p>\n<div class=\"digest\">{} <code>{}</code></div>\n",
        bi("Data residency report", "数据驻留合规报告"),
        bi(
            &format!(
                "Taken {} UTC from {what_en} by {} {}.",
                report.generated_at, s.tool.name, s.tool.version
            ),
            &format!(
                "生成时间 {} UTC；来源：{what_zh}；工具 {} {}。",
                report.generated_at, s.tool.name, s.tool.version
            )
        ),
        bi(
            &format!("SHA-256 of {}:", opts.json_file),
            &format!("{} 的 SHA-256：", opts.json_file)
        ),
        esc(&opts.sha256)
    );
}

fn scope(h: &mut String, report: &Report) {
    let s = &report.scope;
    let _ = write!(
        h,
        "<h2>{}</h2>\n<table>\n",
        bi("1. Scope and provenance", "1. 范围与来源")
    );
    let mut row = |k: String, v: String| {
        let _ = writeln!(h, "<tr><th style=\"width:26%\">{k}</th><td>{v}</td></tr>");
    };
    match (&s.cluster, &s.manifests) {
        (Some(c), _) => {
            row(
                bi("Source", "来源"),
                bi(
                    "live cluster (one LIST per kind)",
                    "在线集群（每类资源一次 LIST）",
                ),
            );
            row(
                bi("API server", "API 服务器"),
                format!("<code>{}</code>", esc(&c.server)),
            );
            row(
                bi("kube-system namespace uid", "kube-system 命名空间 uid"),
                format!("<code>{}</code>", or_dash(c.kube_system_uid.as_deref())),
            );
            if let Some(ctx) = &c.context {
                row(bi("kubeconfig context", "kubeconfig 上下文"), esc(ctx));
            }
        }
        (None, Some(m)) => {
            row(
                bi("Source", "来源"),
                bi("manifests (no cluster)", "清单文件（无集群）"),
            );
            let files: Vec<String> = m
                .files
                .iter()
                .map(|f| format!("<code>{}</code>", esc(f)))
                .collect();
            row(
                bi("Files", "文件"),
                format!(
                    "{} ({})",
                    files.join(", "),
                    bi(
                        &format!("{} documents", m.documents),
                        &format!("{} 个文档", m.documents)
                    )
                ),
            );
        }
        _ => {}
    }
    row(
        bi("Report time", "报告时间"),
        format!("{} UTC", esc(&report.generated_at)),
    );
    row(
        bi("Tool", "工具"),
        format!("{} {}", esc(s.tool.name), esc(s.tool.version)),
    );
    let inv = &s.inventory;
    row(
        bi("Inventory", "清单"),
        bi(
            &format!(
                "{} nodes, {} namespaces, {} workloads judged, {} pods",
                inv.nodes
                    .map_or_else(|| "no".to_string(), |n| n.to_string()),
                inv.namespaces,
                inv.workloads,
                inv.pods
            ),
            &format!(
                "节点 {}，命名空间 {}，已判定工作负载 {}，Pod {}",
                inv.nodes
                    .map_or_else(|| "无".to_string(), |n| n.to_string()),
                inv.namespaces,
                inv.workloads,
                inv.pods
            ),
        ),
    );
    let a = &s.audit_sources;
    let avail = |x: &super::model::Availability| {
        if x.read {
            bi(
                &format!("read ({} objects)", x.objects),
                &format!("已读取（{} 个对象）", x.objects),
            )
        } else {
            let (en, zh) = x.reason.as_ref().map_or(("not read", "未读取"), |r| {
                (r.en.as_str(), r.zh.as_str())
            });
            format!("<span class=\"note\">{}</span>", bi(en, zh))
        }
    };
    row(
        bi("Audit evidence", "审计证据"),
        format!(
            "Events: {} · {}: {} · {}: {}",
            avail(&a.events),
            bi(
                "reports (OpenReports, PolicyReports)",
                "报告（OpenReports、PolicyReport）"
            ),
            avail(&a.policy_reports),
            bi("policy status", "策略状态"),
            avail(&a.policy_status)
        ),
    );
    let _ = writeln!(h, "</table>");

    let _ = write!(
        h,
        "<h3>{}</h3>\n<table><tr><th>{}</th><th>resourceVersion</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>\n",
        bi("Policy set", "策略集"),
        bi("Policy", "策略"),
        bi("Action", "动作"),
        bi("Data classes", "数据类别"),
        bi("Egress", "出站"),
        bi("State", "状态"),
        bi("Audit status", "审计状态")
    );
    if s.policies.is_empty() {
        let _ = writeln!(
            h,
            "<tr><td colspan=\"7\">{}</td></tr>",
            bi("No ResidencyPolicy.", "没有 ResidencyPolicy。")
        );
    }
    for p in &s.policies {
        let classes: Vec<&str> = p.data_classes.iter().map(|c| c.as_str()).collect();
        let state = if p.state == "valid" {
            bi("valid", "有效")
        } else {
            format!(
                "<span class=\"out\">{}</span><br><span class=\"note\">{}</span>",
                bi(
                    "invalid: judged by its strictest reading",
                    "无效：按最严格解读判定"
                ),
                esc(&p.problems.join("; "))
            )
        };
        let status = p.status.as_ref().map_or_else(
            || "—".to_string(),
            |st| {
                bi(
                    &format!(
                        "{} violations; last evaluated {}",
                        st.violations.map_or_else(|| "?".into(), |v| v.to_string()),
                        st.last_evaluated.as_deref().unwrap_or("?")
                    ),
                    &format!(
                        "违规 {}；最近评估 {}",
                        st.violations.map_or_else(|| "?".into(), |v| v.to_string()),
                        st.last_evaluated.as_deref().unwrap_or("?")
                    ),
                )
            },
        );
        let _ = writeln!(
            h,
            "<tr><td><b>{}</b></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{status}</td></tr>",
            esc(&p.name),
            or_dash(p.resource_version.as_deref()),
            action_text(p.action),
            esc(&classes.join(", ")),
            esc(&p.egress_mode)
        );
    }
    let _ = writeln!(h, "</table>");

    let _ = write!(
        h,
        "<h3>{}</h3>\n<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"num\">{}</th><th>SHA-256</th></tr>\n",
        bi("Reference data", "参考数据"),
        bi("Data", "数据"),
        bi("Origin", "出处"),
        bi("Version", "版本"),
        bi("Date", "日期"),
        bi("Licence", "许可"),
        bi("Entries", "条目")
    );
    for d in &s.data {
        let (en, zh) = match d.name {
            "jurisdictionCatalogue" => ("jurisdiction catalogue", "管辖地目录"),
            "mainlandCidrs" => ("mainland-China addresses", "中国大陆地址数据"),
            "extraMainlandCidrs" => ("extra mainland addresses", "附加中国大陆地址"),
            "countryHints" => ("country hints (evidence only)", "国家提示（仅作证据）"),
            _ => ("cluster CIDRs", "集群 CIDR"),
        };
        let source = d
            .source
            .as_deref()
            .map(|s| format!("<br><span class=\"note\">{}</span>", esc(s)))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{}{source}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            bi(en, zh),
            esc(&d.origin),
            or_dash(d.version.as_deref()),
            or_dash(d.date.as_deref()),
            or_dash(d.licence.as_deref()),
            d.entries,
            or_dash(d.sha256.as_deref())
        );
    }
    let _ = writeln!(h, "</table>");
    if let Some(c) = &s.cluster
        && !c.lists.is_empty()
    {
        let lists: Vec<String> = c
            .lists
            .iter()
            .map(|l| {
                format!(
                    "{} <code>{}</code> ({})",
                    esc(&l.resource),
                    or_dash(l.resource_version.as_deref()),
                    l.items
                )
            })
            .collect();
        let _ = writeln!(
            h,
            "<p class=\"note\">{} {}</p>",
            bi(
                "LISTs read (resourceVersion, objects):",
                "读取的 LIST（resourceVersion，对象数）："
            ),
            lists.join(" · ")
        );
    }
    if !s.warnings.is_empty() {
        let _ = write!(h, "<h4>{}</h4><ul>", bi("Warnings", "警告"));
        for w in s.warnings.iter().take(50) {
            let _ = write!(h, "<li class=\"note\">{}</li>", esc(w));
        }
        if s.warnings.len() > 50 {
            let _ = write!(
                h,
                "<li class=\"note\">{}</li>",
                bi(
                    &format!("… and {} more in the JSON", s.warnings.len() - 50),
                    &format!("……另有 {} 条见 JSON", s.warnings.len() - 50)
                )
            );
        }
        let _ = writeln!(h, "</ul>");
    }
}

fn stat(h: &mut String, class: &str, n: usize, en: &str, zh: &str) {
    let _ = write!(
        h,
        "<div class=\"stat {class}\"><b>{n}</b>{}</div>",
        bi(en, zh)
    );
}

fn class_label(c: DataClass) -> String {
    format!("{} · {}", c.as_str(), c.describe_zh())
}

/// A horizontal stacked bar chart: one row per label, segments by key.
fn bar_chart(
    rows: &[(String, Vec<Count>)],
    order: &[&str],
    colour: fn(&str) -> &'static str,
    title: &str,
) -> String {
    let label_w = 190.0;
    let bar_w = 520.0;
    let row_h = 26.0;
    let max = rows
        .iter()
        .map(|(_, c)| c.iter().map(|x| x.count).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let height = rows.len() as f64 * row_h + 10.0;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"{}\" width=\"780\" height=\"{height}\" viewBox=\"0 0 780 {height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(title)
    );
    for (i, (label, counts)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text>",
            y + 15.0,
            esc(label)
        );
        let mut x = label_w;
        let mut total = 0;
        for key in order {
            let Some(c) = counts.iter().find(|c| c.key == *key) else {
                continue;
            };
            let w = c.count as f64 / max * bar_w;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" fill=\"{}\"><title>{}: {}</title></rect>",
                colour(key),
                esc(key),
                c.count
            );
            x += w;
            total += c.count;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\">{total}</text>",
            x + 6.0,
            y + 15.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn legend(
    order: &[&str],
    colour: fn(&str) -> &'static str,
    label: fn(&str) -> (&'static str, &'static str),
) -> String {
    let mut out = String::from("<p class=\"legend note\">");
    for key in order {
        let (en, zh) = label(key);
        let _ = write!(
            out,
            "<span class=\"sw\" style=\"background:{}\"></span>{}",
            colour(key),
            bi(en, zh)
        );
    }
    out.push_str("</p>");
    out
}

fn status_colour(key: &str) -> &'static str {
    match key {
        "violating" => "#b71c1c",
        "exempted" => "#a15c00",
        _ => "#2e7d32",
    }
}

fn status_label(key: &str) -> (&'static str, &'static str) {
    match key {
        "violating" => ("violating", "违规"),
        "exempted" => ("exempted", "已豁免"),
        _ => ("compliant", "合规"),
    }
}

fn counts_text(counts: &[Count], label: impl Fn(&str) -> String) -> String {
    if counts.is_empty() {
        return "—".into();
    }
    counts
        .iter()
        .map(|c| format!("{} {}", label(&c.key), c.count))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(h: &mut String, report: &Report) {
    let s = &report.summary;
    let _ = write!(
        h,
        "<h2>{}</h2>\n<div class=\"cards\">",
        bi("2. Summary by data class", "2. 按数据类别汇总")
    );
    stat(h, "", s.workloads, "governed workloads", "受管工作负载");
    stat(h, "", s.pods, "their pods", "其 Pod");
    stat(h, "red", s.violating, "violating", "违规");
    stat(h, "amber", s.exempted, "exempted", "已豁免");
    stat(h, "green", s.compliant, "compliant", "合规");
    stat(h, "red", s.violations, "violations", "违规项");
    stat(
        h,
        "amber",
        s.unclassified_in_governed_namespaces,
        "unclassified in governed namespaces",
        "受管命名空间中未分类",
    );
    let _ = writeln!(h, "</div>");

    if s.classes.is_empty() {
        let _ = writeln!(
            h,
            "<p>{}</p>",
            bi("No governed workload.", "没有受管工作负载。")
        );
        return;
    }
    let status_rows: Vec<(String, Vec<Count>)> = s
        .classes
        .iter()
        .map(|c| {
            (
                class_label(c.class),
                vec![
                    Count {
                        key: "violating".into(),
                        count: c.violating,
                    },
                    Count {
                        key: "exempted".into(),
                        count: c.exempted,
                    },
                    Count {
                        key: "compliant".into(),
                        count: c.workloads.saturating_sub(c.violating + c.exempted),
                    },
                ],
            )
        })
        .collect();
    let _ = write!(
        h,
        "<h3>{}</h3>{}{}",
        bi("Governed workloads per class", "各类别受管工作负载"),
        bar_chart(
            &status_rows,
            &["violating", "exempted", "compliant"],
            status_colour,
            "governed workloads per class"
        ),
        legend(
            &["violating", "exempted", "compliant"],
            status_colour,
            status_label
        )
    );
    let _ = write!(
        h,
        "<h3>{}</h3>",
        bi(
            "Where their pods run now, by jurisdiction",
            "其 Pod 当前运行位置（按管辖地）"
        )
    );
    if s.pods == 0 {
        let _ = writeln!(
            h,
            "<p class=\"note\">{}</p>",
            bi(
                "No pods in the input: placement is shown by the workloads' constraints and the nodes they match.",
                "输入中没有 Pod：调度位置依据工作负载自身的约束及其匹配的节点。"
            )
        );
    } else {
        let pod_rows: Vec<(String, Vec<Count>)> = s
            .classes
            .iter()
            .map(|c| (class_label(c.class), c.pods_by_jurisdiction.clone()))
            .collect();
        let _ = write!(
            h,
            "{}{}",
            bar_chart(
                &pod_rows,
                &JURISDICTION_ORDER,
                jurisdiction_colour,
                "pods per class by jurisdiction"
            ),
            legend(&JURISDICTION_ORDER, jurisdiction_colour, jurisdiction_label)
        );
    }
    let _ = write!(
        h,
        "<table><tr><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        bi("Class", "类别"),
        bi("Workloads", "工作负载"),
        bi("Pods", "Pod"),
        bi("Pods by jurisdiction", "Pod 按管辖地"),
        bi("by provider / region", "按云厂商 / 地域"),
        bi("Egress posture (workloads)", "出站状况（工作负载数）"),
        bi("Storage at rest (workloads)", "静态存储（工作负载数）"),
        bi("Violating / exempted", "违规 / 豁免")
    );
    for c in &s.classes {
        class_row(h, c);
    }
    let _ = writeln!(h, "</table>");
}

fn class_row(h: &mut String, c: &ClassSummary) {
    let jur = counts_text(&c.pods_by_jurisdiction, |k| {
        let (en, zh) = jurisdiction_label(k);
        bi(en, zh)
    });
    let prov = format!(
        "{}<br>{}",
        counts_text(&c.pods_by_provider, esc),
        counts_text(&c.pods_by_region, esc)
    );
    let egress = c
        .egress
        .iter()
        .map(|e| {
            let (en, zh) = posture_label(&e.key);
            let cls = if matches!(
                e.key.as_str(),
                "mainland" | "clusterOnly" | "outsideAllowed"
            ) {
                "ok"
            } else if e.key == "notChecked" {
                "note"
            } else {
                "out"
            };
            format!("<span class=\"{cls}\">{}</span> {}", bi(en, zh), e.count)
        })
        .collect::<Vec<_>>()
        .join("<br>");
    // The class's posture first, then workloads per posture, most
    // serious first.
    let mut storage = format!("<b>{}</b>", storage_text(c.storage));
    for p in StoragePosture::ALL {
        if let Some(n) = c.storage_workloads.iter().find(|x| x.key == p.as_str()) {
            let (en, zh) = storage_label(p);
            let _ = write!(storage, "<br>{} {}", bi(en, zh), n.count);
        }
    }
    let _ = writeln!(
        h,
        "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{jur}</td><td>{prov}</td><td>{egress}</td><td>{storage}</td><td class=\"num\">{} / {}</td></tr>",
        class_text(c.class),
        c.workloads,
        c.pods,
        c.violating,
        c.exempted
    );
}

fn changes_section(h: &mut String, c: &Changes) {
    let _ = write!(
        h,
        "<h2>{}</h2><p class=\"meta\">{}</p>",
        bi("Changes since the previous report", "自上次报告以来的变化"),
        bi(
            &format!(
                "Previous report taken {} (SHA-256 {}): {} changes.",
                c.previous.generated_at.as_deref().unwrap_or("?"),
                c.previous.sha256,
                c.total()
            ),
            &format!(
                "上次报告生成于 {}（SHA-256 {}）：共 {} 项变化。",
                c.previous.generated_at.as_deref().unwrap_or("?"),
                c.previous.sha256,
                c.total()
            )
        )
    );
    let mut list = |en: &str, zh: &str, items: Vec<String>| {
        let _ = write!(h, "<h4>{} ({})</h4>", bi(en, zh), items.len());
        if items.is_empty() {
            let _ = write!(h, "<p class=\"note\">—</p>");
            return;
        }
        let _ = write!(h, "<ul>");
        for i in items.iter().take(500) {
            let _ = write!(h, "<li>{i}</li>");
        }
        if items.len() > 500 {
            let _ = write!(h, "<li class=\"note\">… {}</li>", items.len() - 500);
        }
        let _ = writeln!(h, "</ul>");
    };
    let wl = |ns: &str, kind: &str, name: &str| {
        format!("{} <b>{}/{}</b>", esc(kind), esc(ns), esc(name))
    };
    list(
        "New classified workloads",
        "新增的已分类工作负载",
        c.new_workloads
            .iter()
            .map(|w| {
                format!(
                    "{} [{}]",
                    wl(&w.namespace, &w.kind, &w.name),
                    esc(&w.classes.join(", "))
                )
            })
            .collect(),
    );
    list(
        "Workloads gone",
        "已消失的工作负载",
        c.removed_workloads
            .iter()
            .map(|w| wl(&w.namespace, &w.kind, &w.name))
            .collect(),
    );
    list(
        "Classes changed",
        "类别变化",
        c.reclassified
            .iter()
            .map(|w| {
                format!(
                    "{}: [{}] → [{}]",
                    wl(&w.namespace, &w.kind, &w.name),
                    esc(&w.before.join(", ")),
                    esc(&w.after.join(", "))
                )
            })
            .collect(),
    );
    let nodes = |n: &[super::compare::NodePods]| {
        n.iter()
            .map(|x| {
                format!(
                    "{} ({}, {}) ×{}",
                    esc(&x.node),
                    esc(x.region.as_deref().unwrap_or("?")),
                    esc(&x.jurisdiction),
                    x.pods
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    list(
        "Moved pods",
        "Pod 位置变化",
        c.moved_pods
            .iter()
            .map(|m| {
                let warn = if m.newly_outside > 0 {
                    format!(
                        " <span class=\"out\">{}</span>",
                        bi(
                            &format!("{} newly outside mainland China", m.newly_outside),
                            &format!("新增 {} 个位于中国大陆以外", m.newly_outside)
                        )
                    )
                } else {
                    String::new()
                };
                format!(
                    "{}: {} → {}{warn}",
                    wl(&m.namespace, &m.kind, &m.name),
                    nodes(&m.before),
                    nodes(&m.after)
                )
            })
            .collect(),
    );
    let place = |p: &super::compare::VolumePlace| {
        let pv = p
            .persistent_volume
            .as_deref()
            .map(|x| format!("PV {} ", esc(x)))
            .unwrap_or_default();
        format!("{pv}{} [{}]", esc(&p.location), esc(&p.posture))
    };
    list(
        "Moved or newly outside volumes",
        "位置变化或新增境外的卷",
        c.moved_volumes
            .iter()
            .map(|m| {
                let warn = if m.newly_outside {
                    format!(
                        " <span class=\"out\">{}</span>",
                        bi("newly outside mainland China", "新增位于中国大陆以外")
                    )
                } else {
                    String::new()
                };
                let claim = m
                    .claim
                    .as_deref()
                    .map(|x| format!(" ({})", esc(x)))
                    .unwrap_or_default();
                let before = m
                    .before
                    .as_ref()
                    .map_or_else(|| bi("new volume", "新卷"), place);
                format!(
                    "{} {} <b>{}</b>{claim}: {before} → {}{warn}",
                    wl(&m.namespace, &m.kind, &m.name),
                    bi("volume", "卷"),
                    esc(&m.volume),
                    place(&m.after)
                )
            })
            .collect(),
    );
    let ex = |e: &super::compare::ExemptionChange| {
        format!(
            "{} · {} {} · {} · {}",
            esc(&e.policy),
            esc(&e.basis),
            esc(&e.reference),
            esc(&e.approved_by),
            esc(&e.expires)
        )
    };
    list(
        "New exemptions",
        "新增豁免",
        c.new_exemptions.iter().map(ex).collect(),
    );
    list(
        "Expired exemptions",
        "已到期的豁免",
        c.expired_exemptions.iter().map(ex).collect(),
    );
    list(
        "Removed exemptions",
        "已删除的豁免",
        c.removed_exemptions.iter().map(ex).collect(),
    );
    let v = |x: &super::compare::ViolationChange| {
        let pod = x
            .pod
            .as_deref()
            .map(|p| format!(" pod {}", esc(p)))
            .unwrap_or_default();
        format!(
            "{}{pod}: <code>{}</code> ({}) <span class=\"note\">{}</span>",
            wl(&x.namespace, &x.kind, &x.name),
            esc(&x.code),
            esc(&x.policy),
            esc(&x.field)
        )
    };
    list(
        "New violations",
        "新增违规",
        c.new_violations.iter().map(v).collect(),
    );
    list(
        "Fixed violations",
        "已修复的违规",
        c.fixed_violations.iter().map(v).collect(),
    );
}

fn priority(w: &WorkloadEntry) -> u8 {
    match (w.status, w.action) {
        ("violating", Some(Action::Deny)) => 0,
        ("violating", Some(Action::Warn)) => 1,
        ("violating", _) => 2,
        ("exempted", _) => 3,
        _ => 4,
    }
}

/// Bytes of full workload cards, and of cards and one-line rows together,
/// the HTML allows itself (the rest of the page is far smaller).
const CARDS_BUDGET: usize = 2_500_000;
const ROWS_BUDGET: usize = 3_800_000;

fn compact_row(h: &mut String, w: &WorkloadEntry) {
    let classes: Vec<&str> = w.classes.iter().map(|c| c.as_str()).collect();
    let policies: Vec<&str> = w.policies.iter().map(|p| p.policy.as_str()).collect();
    let outside = w.placement.pods_outside_mainland();
    let codes: Vec<&str> = w
        .violations
        .iter()
        .filter(|v| !v.exempted)
        .map(|v| v.code.as_str())
        .collect();
    let _ = writeln!(
        h,
        "<tr><td>{} {}/{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{outside}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
        w.kind.as_str(),
        esc(&w.namespace),
        esc(&w.name),
        esc(&classes.join(", ")),
        status_badge(w.status),
        esc(&policies.join(", ")),
        w.placement.pods.len(),
        esc(w.egress.as_ref().map_or("notChecked", |e| e.posture)),
        storage_compact(&w.storage),
        esc(&codes.join(" "))
    );
}

/// A workload's storage on one line: its posture and how many volumes,
/// the volumes not in mainland China named.
fn storage_compact(s: &StorageEntry) -> String {
    if s.volumes.is_empty() {
        return esc(s.posture.as_str());
    }
    let flagged: Vec<String> = s
        .volumes
        .iter()
        .filter(|v| v.posture > StoragePosture::Mainland)
        .map(|v| esc(v.claim.as_deref().unwrap_or(&v.volume)))
        .collect();
    let mut out = format!("{} ({})", esc(s.posture.as_str()), s.volumes.len());
    if !flagged.is_empty() {
        let _ = write!(out, ": {}", flagged.join(", "));
    }
    out
}

fn workloads(h: &mut String, report: &Report, limit: usize) {
    let all = &report.workloads;
    let _ = write!(
        h,
        "<h2>{}</h2>",
        bi("3. Governed workloads", "3. 受管工作负载")
    );
    if all.is_empty() {
        let _ = writeln!(h, "<p>{}</p>", bi("None.", "无。"));
        return;
    }
    let mut order: Vec<&WorkloadEntry> = all.iter().collect();
    order.sort_by_key(|w| priority(w));
    let a = &report.scope.audit_sources;
    let audited = a.events.read || a.policy_reports.read || a.policy_status.read;
    // Full cards up to `limit` and a byte budget, then one line each up to
    // ten times as many and a second budget, then counts: the page stays
    // under 5 MB whatever the messages weigh.
    let mut cards = String::new();
    let mut detailed = 0;
    while detailed < order.len().min(limit) && cards.len() < CARDS_BUDGET {
        workload_card(&mut cards, order[detailed], audited);
        detailed += 1;
    }
    let mut rows = String::new();
    let mut compact_end = detailed;
    let max_rows = limit.saturating_mul(10);
    while compact_end < order.len()
        && compact_end - detailed < max_rows
        && cards.len() + rows.len() < ROWS_BUDGET
    {
        compact_row(&mut rows, order[compact_end]);
        compact_end += 1;
    }
    if detailed < order.len() {
        let _ = writeln!(
            h,
            "<p class=\"note\">{}</p>",
            bi(
                &format!(
                    "{} workloads: the first {detailed} (violating first) in full, the next {} one line each{}. The JSON and CSV hold every workload in full.",
                    order.len(),
                    compact_end - detailed,
                    if compact_end < order.len() {
                        format!(
                            ", the remaining {} counted per namespace",
                            order.len() - compact_end
                        )
                    } else {
                        String::new()
                    }
                ),
                &format!(
                    "共 {} 个工作负载：前 {detailed} 个（违规优先）完整列出，其后 {} 个每个一行{}。JSON 和 CSV 包含全部工作负载的完整信息。",
                    order.len(),
                    compact_end - detailed,
                    if compact_end < order.len() {
                        format!("，其余 {} 个按命名空间计数", order.len() - compact_end)
                    } else {
                        String::new()
                    }
                )
            )
        );
    }
    h.push_str(&cards);
    if compact_end > detailed {
        let _ = write!(
            h,
            "<h3>{}</h3><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            bi("Further workloads", "其他工作负载"),
            bi("Workload", "工作负载"),
            bi("Classes", "类别"),
            bi("Status", "状态"),
            bi("Policies", "策略"),
            bi("Pods", "Pod"),
            bi("outside", "境外"),
            bi("Egress", "出站"),
            bi("Storage", "存储"),
            bi("Violations", "违规")
        );
        h.push_str(&rows);
        let _ = writeln!(h, "</table>");
    }
    if compact_end < order.len() {
        let mut per_ns: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
        for w in &order[compact_end..] {
            let slot = per_ns.entry(&w.namespace).or_default();
            match w.status {
                "violating" => slot[0] += 1,
                "exempted" => slot[1] += 1,
                _ => slot[2] += 1,
            }
        }
        let _ = write!(
            h,
            "<h3>{}</h3><table><tr><th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th></tr>",
            bi("The rest, per namespace", "其余工作负载（按命名空间）"),
            bi("Namespace", "命名空间"),
            bi("violating", "违规"),
            bi("exempted", "已豁免"),
            bi("compliant", "合规")
        );
        for (ns, [v, e, c]) in per_ns {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{v}</td><td class=\"num\">{e}</td><td class=\"num\">{c}</td></tr>",
                esc(ns)
            );
        }
        let _ = writeln!(h, "</table>");
    }
}

fn node_cells(n: &NodeEntry) -> String {
    let (en, zh) = jurisdiction_label(&n.jurisdiction);
    let cls = if n.jurisdiction == "mainland-china" {
        "ok"
    } else {
        "out"
    };
    let country = n
        .country
        .as_deref()
        .map(|c| format!(" ({})", esc(c)))
        .unwrap_or_default();
    let why = n
        .unverified_because
        .as_ref()
        .map(|t| format!("<br><span class=\"note\">{}</span>", bi(&t.en, &t.zh)))
        .unwrap_or_default();
    let provider = match (&n.provider, &n.provider_region) {
        (Some(p), Some(r)) => format!("{} {}", esc(p), esc(r)),
        (Some(p), None) => esc(p),
        _ => "—".into(),
    };
    format!(
        "<td>{}</td><td>{}</td><td><span class=\"{cls}\">{}</span>{country}{why}</td><td><code>{}</code><br>{provider}</td>",
        esc(&n.name),
        or_dash(n.region.as_deref()),
        bi(en, zh),
        or_dash(n.provider_id.as_deref())
    )
}

fn violation_block(h: &mut String, v: &ViolationEntry, audited: bool) {
    let (en, zh) = code_label(v.code);
    let exempted = if v.exempted {
        format!(
            " <span class=\"badge exempted\">{}</span>",
            bi("exempted", "已豁免")
        )
    } else {
        String::new()
    };
    let pod = match (&v.pod, &v.node) {
        (Some(p), Some(n)) => format!(" · pod <b>{}</b> · node <b>{}</b>", esc(p), esc(n)),
        (Some(p), None) => format!(" · pod <b>{}</b>", esc(p)),
        _ => String::new(),
    };
    let seen = match &v.first_seen {
        Some(t) => bi(&format!("first reported {t}"), &format!("首次报告于 {t}")),
        None => bi("first report time unknown", "首次报告时间未知"),
    };
    let by = if v.seen_by.is_empty() {
        bi("not yet reported by the audit", "审计尚未报告")
    } else {
        bi(
            &format!("listed in: {}", v.seen_by.join(", ")),
            &format!("见于：{}", v.seen_by.join("、")),
        )
    };
    let audit = if audited {
        format!("<br><span class=\"note\">{seen} · {by}</span>")
    } else {
        String::new()
    };
    let _ = write!(
        h,
        "<div><code>{}</code> {}{exempted} · {} <span class=\"note\">{}</span>{pod}{audit}<div class=\"msg en\">{}</div><div class=\"msg zh\">{}</div></div>",
        v.code.as_str(),
        bi(en, zh),
        bi(
            &format!("policy {}", v.policy),
            &format!("策略 {}", v.policy)
        ),
        esc(&v.field),
        esc(&v.message.en),
        esc(&v.message.zh)
    );
}

fn workload_card(h: &mut String, w: &WorkloadEntry, audited: bool) {
    let _ = write!(
        h,
        "<div class=\"workload {}\"><h3>{} {}/{} {}</h3>",
        w.status,
        w.kind.as_str(),
        esc(&w.namespace),
        esc(&w.name),
        status_badge(w.status)
    );
    // Classes and where each label comes from.
    let classes: String = w.classes.iter().map(|c| class_text(*c)).collect();
    let sources: Vec<String> = w
        .class_sources
        .iter()
        .map(|s| {
            format!(
                "<code>residencyguard.io/data-class={}</code> {} <code>{}</code>",
                esc(&s.value),
                bi("on", "位于"),
                esc(&s.location)
            )
        })
        .collect();
    let _ = write!(
        h,
        "<p>{classes}<br><span class=\"note\">{}</span></p>",
        sources.join(" · ")
    );
    // Governing policies.
    let _ = write!(
        h,
        "<h4>{}</h4><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        bi("Governing policies", "管辖策略"),
        bi("Policy", "策略"),
        bi("Action", "动作"),
        bi("Result", "结果"),
        bi("Exemption in force", "生效的豁免")
    );
    for p in &w.policies {
        let result = if p.violated {
            format!("<span class=\"out\">{}</span>", bi("violated", "违反"))
        } else {
            format!("<span class=\"ok\">{}</span>", bi("satisfied", "符合"))
        };
        let ex = match &p.exemption {
            Some(e) => {
                let days = e
                    .days_left
                    .map_or_else(|| "?".to_string(), |d| d.to_string());
                let state = if e.active {
                    bi(&format!("{days} days left"), &format!("剩余 {days} 天"))
                } else {
                    format!("<span class=\"out\">{}</span>", bi("lapsed", "已失效"))
                };
                format!(
                    "{} · {} · {} {} · {} {} · {state}",
                    esc(&e.basis),
                    esc(&e.reference),
                    bi("approved by", "批准人"),
                    esc(&e.approved_by),
                    bi("until", "有效期至"),
                    esc(&e.expires)
                )
            }
            None => "—".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{result}</td><td>{ex}</td></tr>",
            esc(&p.policy),
            action_text(p.action)
        );
    }
    let _ = write!(h, "</table>");
    // Placement evidence.
    let pl = &w.placement;
    let guarantee = if pl.guaranteed {
        format!(
            "<span class=\"ok\">{}</span>",
            bi(
                "guaranteed by the pods' own constraints",
                "由 Pod 自身约束保证"
            )
        )
    } else {
        format!(
            "<span class=\"out\">{}</span>",
            bi("not guaranteed", "无保证")
        )
    };
    let constraints = if pl.constraints.is_empty() {
        bi(
            "no nodeSelector, node affinity or nodeName",
            "没有 nodeSelector、节点亲和性或 nodeName",
        )
    } else {
        pl.constraints
            .iter()
            .map(|c| format!("<code>{}</code>", esc(c)))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let matching = pl
        .matching_nodes
        .map(|m| {
            bi(
                &format!(" · {m} matching nodes known"),
                &format!(" · 已知匹配节点 {m} 个"),
            )
        })
        .unwrap_or_default();
    let _ = write!(
        h,
        "<h4>{}</h4><p>{guarantee}{matching}<br>{constraints}</p>",
        bi("Placement", "调度位置")
    );
    if !pl.outside_nodes.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\">{}</p><table><tr><th>{}</th><th>{}</th><th>{}</th><th>providerID</th></tr>",
            bi(
                "Nodes its constraints allow that are outside mainland China or unverified:",
                "其约束允许、但不在中国大陆或无法核实的节点："
            ),
            bi("Node", "节点"),
            bi("Region label", "地域标签"),
            bi("Jurisdiction", "管辖地")
        );
        for n in &pl.outside_nodes {
            let _ = write!(h, "<tr>{}</tr>", node_cells(n));
        }
        let _ = write!(h, "</table>");
    }
    if pl.pods.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\">{}</p>",
            bi(
                "No pods running now (or none in the input).",
                "当前没有运行中的 Pod（或输入中没有）。"
            )
        );
    } else {
        let _ = write!(
            h,
            "<table><tr><th>Pod</th><th>{}</th><th>{}</th><th>{}</th><th>providerID</th></tr>",
            bi("Node", "节点"),
            bi("Region label", "地域标签"),
            bi("Jurisdiction", "管辖地")
        );
        for p in pl.pods.iter().take(50) {
            match &p.node {
                Some(n) => {
                    let _ = write!(h, "<tr><td>{}</td>{}</tr>", esc(&p.name), node_cells(n));
                }
                None => {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td colspan=\"4\" class=\"note\">{}</td></tr>",
                        esc(&p.name),
                        bi("not scheduled yet", "尚未调度")
                    );
                }
            }
        }
        if pl.pods.len() > 50 {
            let _ = write!(
                h,
                "<tr><td colspan=\"5\" class=\"note\">{}</td></tr>",
                bi(
                    &format!("… {} more pods in the JSON", pl.pods.len() - 50),
                    &format!("……另有 {} 个 Pod 见 JSON", pl.pods.len() - 50)
                )
            );
        }
        let _ = write!(h, "</table>");
    }
    // Effective egress.
    if let Some(e) = &w.egress {
        let (en, zh) = posture_label(e.posture);
        let cls = if matches!(e.posture, "mainland" | "clusterOnly" | "outsideAllowed") {
            "ok"
        } else {
            "out"
        };
        let selecting = if e.selecting_policies.is_empty() {
            String::new()
        } else {
            format!(
                "<br><span class=\"note\">{} {}</span>",
                bi("Selected by", "选中它的"),
                esc(&e.selecting_policies.join(", "))
            )
        };
        let _ = write!(
            h,
            "<h4>{}</h4><p><span class=\"{cls}\">{}</span>{selecting}</p>",
            bi("Effective egress", "实际出站"),
            bi(en, zh)
        );
        for r in &e.allow_all_rules {
            let _ = write!(
                h,
                "<p class=\"out\">{} rule {} ({}): {}</p>",
                esc(&r.network_policy),
                r.rule + 1,
                format_args!("spec.egress[{}]", r.rule),
                esc(&r.reason)
            );
        }
        if !e.external_blocks.is_empty() {
            let _ = write!(
                h,
                "<table><tr><th>NetworkPolicy</th><th>{}</th><th>CIDR</th><th>{}</th><th>{}</th></tr>",
                bi("Rule", "规则"),
                bi("Where", "位置"),
                bi("Country", "国家/地区")
            );
            for b in &e.external_blocks {
                let except = if b.except.is_empty() {
                    String::new()
                } else {
                    format!(" except {}", esc(&b.except.join(", ")))
                };
                let where_ = if b.in_cluster {
                    format!(
                        "<span class=\"ok\">{}</span>",
                        bi("in the cluster", "集群内")
                    )
                } else if b.mainland {
                    format!(
                        "<span class=\"ok\">{}</span>",
                        bi("mainland China", "中国大陆")
                    )
                } else if !b.allowed_by.is_empty() {
                    format!(
                        "<span class=\"ok\">{}</span> {}",
                        bi("outside, approved by", "境外，已批准："),
                        esc(&b.allowed_by.join(", "))
                    )
                } else {
                    let ex = b
                        .example_outside
                        .as_deref()
                        .map(|x| format!(" (e.g. {})", esc(x)))
                        .unwrap_or_default();
                    format!(
                        "<span class=\"out\">{}</span>{ex}",
                        bi("outside mainland China", "中国大陆以外")
                    )
                };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code>{except}</td><td>{where_}</td><td>{}</td></tr>",
                    esc(&b.network_policy),
                    b.rule + 1,
                    esc(&b.cidr),
                    or_dash(b.country.as_deref())
                );
            }
            let _ = write!(h, "</table>");
        }
        if !e.layers.is_empty() {
            let cni = e.cni.as_deref().unwrap_or("kubernetes");
            let _ = write!(
                h,
                "<table><tr><th>{} ({})</th><th>{}</th><th>{}</th><th>{}</th></tr>",
                bi("Layer decisions, in order", "各层决定（按评估顺序）"),
                esc(cni),
                bi("Rule", "规则"),
                bi("Outcome", "结果"),
                bi("Ranges", "地址段")
            );
            for d in &e.layers {
                let cls = if d.outcome == "denied" || d.outcome == "defaultDenied" {
                    "ok"
                } else {
                    "note"
                };
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td><span class=\"{cls}\">{}</span></td><td><code>{}</code></td></tr>",
                    esc(&d.by),
                    or_dash(d.field.as_deref()),
                    esc(d.outcome),
                    esc(&d.ranges.texts().join(", "))
                );
            }
            let _ = write!(h, "</table>");
        }
        for d in &e.domains {
            let _ = write!(
                h,
                "<p class=\"out\">{} {}: {} <code>{}</code></p>",
                esc(&d.policy),
                esc(&d.field),
                bi("allows the domain name", "允许访问域名"),
                esc(&d.domain)
            );
        }
        if e.in_cluster_peers > 0 {
            let _ = write!(
                h,
                "<p class=\"note\">{}</p>",
                bi(
                    &format!(
                        "{} in-cluster peers (pod and namespace selectors).",
                        e.in_cluster_peers
                    ),
                    &format!(
                        "集群内对端 {} 个（Pod 与命名空间选择器）。",
                        e.in_cluster_peers
                    )
                )
            );
        }
    }
    storage_section(h, &w.storage);
    // Violations.
    if !w.violations.is_empty() {
        let _ = write!(h, "<h4>{}</h4>", bi("Violations", "违规"));
        for v in &w.violations {
            violation_block(h, v, audited);
        }
    }
    let _ = writeln!(h, "</div>");
}

/// Volumes shown in a card; the JSON holds all.
const CARD_VOLUMES: usize = 20;

fn storage_section(h: &mut String, s: &StorageEntry) {
    let checked = if s.checked {
        String::new()
    } else {
        format!(
            "<br><span class=\"note\">{}</span>",
            bi(
                "No governing policy checks storage (spec.storage.mode: Unchecked): described, not enforced.",
                "没有管辖策略检查存储（spec.storage.mode: Unchecked）：仅列出，不强制。"
            )
        )
    };
    let _ = write!(
        h,
        "<h4>{}</h4><p>{}{checked}</p>",
        bi("Storage at rest", "静态存储"),
        storage_text(s.posture)
    );
    if s.volumes.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\">{}</p>",
            bi(
                "No persistent or remote volume: emptyDir, configMap, secret and projected volumes stay on the pod's node, which placement judges.",
                "没有持久卷或远程卷：emptyDir、configMap、secret 和 projected 卷留在 Pod 所在节点，由调度位置判定。"
            )
        );
        return;
    }
    let _ = write!(
        h,
        "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
        bi("Volume", "卷"),
        bi("Claim / PersistentVolume", "声明 / PersistentVolume"),
        bi("StorageClass, binding", "StorageClass，绑定模式"),
        bi("Where, on what evidence", "位置及依据"),
        bi("Servers", "服务器"),
        bi("Posture, findings", "状况，发现")
    );
    for v in s.volumes.iter().take(CARD_VOLUMES) {
        volume_row(h, v);
    }
    if s.volumes.len() > CARD_VOLUMES {
        let more = s.volumes.len() - CARD_VOLUMES;
        let _ = write!(
            h,
            "<tr><td colspan=\"6\" class=\"note\">{}</td></tr>",
            bi(
                &format!("… {more} more volumes in the JSON"),
                &format!("……另有 {more} 个卷见 JSON")
            )
        );
    }
    let _ = write!(h, "</table>");
}

fn volume_row(h: &mut String, v: &VolumeEntry) {
    let source = match v.source {
        "claimTemplate" => bi("claims to come", "将创建的声明"),
        "inline" => bi("inline", "内联"),
        _ => String::new(),
    };
    let mut what = Vec::new();
    if let Some(c) = &v.claim {
        what.push(format!("{} <code>{}</code>", bi("claim", "声明"), esc(c)));
    }
    if let Some(pv) = &v.persistent_volume {
        what.push(format!("PV <code>{}</code>", esc(pv)));
    }
    if let Some(d) = &v.driver {
        what.push(format!("{} <code>{}</code>", bi("driver", "驱动"), esc(d)));
    }
    if let Some(st) = &v.store {
        what.push(esc(st));
    }
    let class = match v.storage_class.as_deref() {
        None => "—".to_string(),
        Some("") => bi("\"\" (a pre-provisioned volume)", "\"\"（预制卷）"),
        Some(c) => {
            let default = if v.default_class {
                bi(" (the default)", "（默认类）")
            } else {
                String::new()
            };
            let binding = match v.binding_mode {
                Some(BindingMode::WaitForFirstConsumer) => "<br>WaitForFirstConsumer",
                Some(BindingMode::Immediate) => "<br>Immediate",
                None => "",
            };
            let provisioner = v
                .provisioner
                .as_deref()
                .map(|p| format!("<br><span class=\"note\">{}</span>", esc(p)))
                .unwrap_or_default();
            format!("<code>{}</code>{default}{binding}{provisioner}", esc(c))
        }
    };
    let place = match &v.location {
        Some(l) => {
            let cls = match l.standing {
                "mainland" => "ok",
                _ => "out",
            };
            format!(
                "<span class=\"{cls}\">{}</span>",
                bi(&l.description.en, &l.description.zh)
            )
        }
        None if v.class_guarantee == Some("followsPod") => format!(
            "<span class=\"ok\">{}</span>",
            bi(
                "follows the pod's placement (provisioned where the pod is scheduled)",
                "随 Pod 调度位置制备"
            )
        ),
        None if v.class_guarantee == Some("anywhere") => format!(
            "<span class=\"out\">{}</span>",
            bi(
                "wherever the provisioner chooses (no allowedTopologies)",
                "由制备器任意选择（无 allowedTopologies）"
            )
        ),
        None if v.class_guarantee == Some("mainland") => format!(
            "<span class=\"ok\">{}</span>",
            bi(
                "allowedTopologies are mainland only",
                "allowedTopologies 仅限中国大陆"
            )
        ),
        None if !v.endpoints.is_empty() => bi("where its servers are", "取决于其服务器位置"),
        None => format!(
            "<span class=\"out\">{}</span>",
            bi("cannot be established", "无法确定")
        ),
    };
    let topology = if v.topology.is_empty() {
        String::new()
    } else {
        format!(
            "<br>{}",
            v.topology
                .iter()
                .map(|t| format!("<code>{}</code>", esc(t)))
                .collect::<Vec<_>>()
                .join("<br>")
        )
    };
    let servers = if v.endpoints.is_empty() {
        "—".to_string()
    } else {
        v.endpoints
            .iter()
            .map(|e| {
                let (cls, en, zh) = match e.standing {
                    "mainland" => ("ok", "mainland China", "中国大陆"),
                    "cluster" => ("ok", "in the cluster", "集群内"),
                    "outside" => ("out", "outside mainland China", "中国大陆以外"),
                    _ => ("out", "host name: not verified", "主机名：未核实"),
                };
                let country = e
                    .country
                    .as_deref()
                    .map(|c| format!(" ({})", esc(c)))
                    .unwrap_or_default();
                format!(
                    "<code>{}</code> {}<br><span class=\"{cls}\">{}</span>{country}",
                    esc(&e.server),
                    esc(&e.field),
                    bi(en, zh)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let findings = v
        .findings
        .iter()
        .map(|f| format!("<br><code>{}</code> {}", f.code.as_str(), esc(f.reason)))
        .collect::<String>();
    let _ = write!(
        h,
        "<tr><td><b>{}</b> {source}<br><span class=\"note\">{}</span></td><td>{}</td><td>{class}</td><td>{place}{topology}</td><td>{servers}</td><td>{}{findings}</td></tr>",
        esc(&v.volume),
        esc(&v.field),
        if what.is_empty() {
            "—".to_string()
        } else {
            what.join("<br>")
        },
        storage_text(v.posture)
    );
}

fn coverage(h: &mut String, report: &Report) {
    let c = &report.coverage;
    let _ = write!(
        h,
        "<h2>{}</h2><p>{}</p><p class=\"note\">{}</p>",
        bi(
            "4. Coverage: what is not classified",
            "4. 覆盖范围：未分类的内容"
        ),
        bi(
            &format!(
                "{} governed namespaces (a policy selects them; control-plane namespaces excepted): {}",
                c.governed_namespaces.len(),
                c.governed_namespaces.join(", ")
            ),
            &format!(
                "受管命名空间 {} 个（有策略选中；控制平面命名空间除外）：{}",
                c.governed_namespaces.len(),
                c.governed_namespaces.join("、")
            )
        ),
        bi(
            "Workloads there that carry no data class are governed by nothing: each one is either unregulated data or a gap in classification.",
            "这些命名空间中未标注数据类别的工作负载不受任何策略管辖：它们要么不涉及受监管数据，要么是分类遗漏。"
        )
    );
    let table = |h: &mut String, title: String, items: Vec<String>| {
        let _ = write!(h, "<h3>{title} ({})</h3>", items.len());
        if items.is_empty() {
            let _ = write!(h, "<p class=\"note\">—</p>");
            return;
        }
        let _ = write!(h, "<table><tr><th>{}</th></tr>", bi("Workload", "工作负载"));
        for i in items.iter().take(2000) {
            let _ = write!(h, "<tr><td>{i}</td></tr>");
        }
        if items.len() > 2000 {
            let _ = write!(
                h,
                "<tr><td class=\"note\">{}</td></tr>",
                bi(
                    &format!("… {} more in the JSON", items.len() - 2000),
                    &format!("……另有 {} 个见 JSON", items.len() - 2000)
                )
            );
        }
        let _ = writeln!(h, "</table>");
    };
    let r = |w: &super::model::WorkloadRef| {
        format!("{} {}/{}", w.kind.as_str(), esc(&w.namespace), esc(&w.name))
    };
    table(
        h,
        bi(
            "Unclassified workloads in governed namespaces",
            "受管命名空间中未分类的工作负载",
        ),
        c.unclassified.iter().map(r).collect(),
    );
    table(
        h,
        bi(
            "Classified workloads no policy governs",
            "已分类但无策略管辖的工作负载",
        ),
        c.classified_ungoverned.iter().map(r).collect(),
    );
    if !c.unclassifiable.is_empty() {
        table(
            h,
            bi(
                "Workloads whose data-class label cannot be read",
                "数据类别标签无法解析的工作负载",
            ),
            c.unclassifiable
                .iter()
                .map(|u| {
                    format!(
                        "{} {}/{}<br><span class=\"note\">{}</span>",
                        u.kind.as_str(),
                        esc(&u.namespace),
                        esc(&u.name),
                        bi(&u.error.en, &u.error.zh)
                    )
                })
                .collect(),
        );
    }
}

fn exemptions(h: &mut String, report: &Report) {
    let _ = write!(h, "<h2>{}</h2>", bi("5. Exemptions", "5. 豁免"));
    let groups: [(&str, &str, Option<u32>); 3] = [
        ("Expiring within 30 days", "30 天内到期", Some(30)),
        ("Expiring within 90 days", "90 天内到期", Some(90)),
        ("All exemptions", "全部豁免", None),
    ];
    for (en, zh, within) in groups {
        let items: Vec<_> = report
            .exemptions
            .iter()
            .filter(|e| within.is_none() || e.expires_within == within)
            .collect();
        let _ = write!(h, "<h3>{} ({})</h3>", bi(en, zh), items.len());
        if items.is_empty() {
            let _ = write!(h, "<p class=\"note\">—</p>");
            continue;
        }
        let _ = write!(
            h,
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"num\">{}</th><th>{}</th></tr>",
            bi("Policy", "策略"),
            bi("Legal basis and reference", "法律依据与编号"),
            bi("Approved by", "批准人"),
            bi("Namespaces", "命名空间"),
            bi("Last day (CST)", "最后有效日（北京时间）"),
            bi("Days left", "剩余天数"),
            bi("Covers now", "当前覆盖")
        );
        for e in items {
            let days = if e.state == "lapsed" {
                format!("<span class=\"out\">{}</span>", bi("lapsed", "已失效"))
            } else {
                e.days_left.to_string()
            };
            let covers: Vec<String> = e
                .covers
                .iter()
                .take(20)
                .map(|w| format!("{} {}/{}", w.kind.as_str(), esc(&w.namespace), esc(&w.name)))
                .collect();
            let more = if e.covers.len() > 20 {
                format!(" … +{}", e.covers.len() - 20)
            } else {
                String::new()
            };
            let _ = writeln!(
                h,
                "<tr><td>{} [{}]</td><td>{} · {}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{days}</td><td>{}{more}</td></tr>",
                esc(&e.policy),
                e.index,
                esc(&e.basis),
                esc(&e.reference),
                esc(&e.approved_by),
                esc(&e.namespaces.join(", ")),
                esc(&e.expires),
                if covers.is_empty() {
                    "—".to_string()
                } else {
                    covers.join("<br>")
                }
            );
        }
        let _ = writeln!(h, "</table>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            bi("<b>", "中"),
            "<span class=\"en\">&lt;b&gt;</span><span class=\"zh\">中</span>"
        );
    }

    #[test]
    fn the_first_language_follows_the_option() {
        assert!(css(Lang::En).contains(".zh{display:none}"));
        let zh = css(Lang::ZhCn);
        assert!(
            zh.contains(".en{display:none}") && zh.contains("#en:target"),
            "{zh}"
        );
    }
}
