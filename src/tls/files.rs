//! Files mode (`--tls-mode files`): the serving pair from a directory (a
//! mounted Secret, written by cert-manager or by hand). A poller re-reads
//! `tls.crt`/`tls.key`: Secret volumes update by swapping a `..data`
//! symlink, so the files are re-opened by path each time, never watched by
//! inode.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{CertStore, TlsError};

/// Files mode: the certificate directory (a mounted Secret).
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    /// Read both files and install them if they changed.
    pub fn load_into(&self, store: &CertStore) -> Result<bool, TlsError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read(p.display().to_string(), e));
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        store.replace(&cert, &key)
    }

    /// Poll for changes until the process ends. A broken pair on disk (a
    /// half-written update) keeps the previous certificate and is retried.
    pub async fn watch(
        self,
        store: Arc<CertStore>,
        every: Duration,
        reloads: impl Fn(bool) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.load_into(&store) {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    reloads(true);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one");
                    reloads(false);
                }
            }
        }
    }
}
