//! Challenges go into the target's certificate Secret, which every replica
//! watches and compiles into its snapshots; the CA is told to validate
//! only once every data plane in the fleet (whichever replica it talks to)
//! acked a snapshot holding them: the acks `Programmed` is built on.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use postern_acme::{Presenter, Problem};
use postern_compile::AcmeRequest;
use postern_snapshot::AcmeChallenge;

use super::store::SecretStore;
use crate::fleet::FleetView;

/// How long the data planes get to ack the challenges.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Acked {
    pub store: SecretStore,
    pub fleet: Arc<FleetView>,
}

impl Acked {
    /// Whether some data plane is connected and every one acked a
    /// snapshot holding all of `wanted`.
    fn all_acked(&self, wanted: &[AcmeChallenge]) -> Result<bool, String> {
        let dataplanes = self.fleet.dataplanes();
        if dataplanes.is_empty() {
            return Err("no data plane is in the fleet to answer the challenges".into());
        }
        Ok(dataplanes.iter().all(|dp| {
            dp.acked
                .as_ref()
                .is_some_and(|p| wanted.iter().all(|c| p.answers(c)))
        }))
    }

    async fn set(
        &self,
        request: &AcmeRequest,
        challenges: Option<&[AcmeChallenge]>,
    ) -> Result<(), String> {
        let mut content = self.store.read(request).await?;
        content.challenges = match challenges {
            Some(c) => Some(serde_json::to_vec(c).map_err(|e| e.to_string())?),
            None => None,
        };
        self.store.write(request, content).await
    }
}

impl Presenter for Acked {
    fn present<'a>(
        &'a self,
        request: &'a AcmeRequest,
        challenges: Vec<AcmeChallenge>,
    ) -> BoxFuture<'a, Result<(), Problem>> {
        async move {
            let fail = |detail: String| Problem {
                kind: "postern:notPresented".into(),
                detail,
            };
            self.set(request, Some(&challenges)).await.map_err(fail)?;
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            let mut last = String::new();
            while tokio::time::Instant::now() < deadline {
                match self.all_acked(&challenges) {
                    Ok(true) => return Ok(()),
                    Ok(false) => last = "not every data plane acked the challenges".into(),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(fail(format!("{last} within {}s", ACK_TIMEOUT.as_secs())))
        }
        .boxed()
    }

    fn withdraw<'a>(&'a self, request: &'a AcmeRequest) -> BoxFuture<'a, ()> {
        async move {
            let content = match self.store.read(request).await {
                Ok(content) => content,
                Err(e) => return tracing::warn!(target = %request.key, error = %e, "cannot withdraw challenges"),
            };
            if content.challenges.is_none() {
                return;
            }
            if let Err(e) = self.set(request, None).await {
                tracing::warn!(target = %request.key, error = %e, "cannot withdraw challenges");
            }
        }
        .boxed()
    }
}
