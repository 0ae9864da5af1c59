//! Installing Postern's CRDs into the rig.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

/// Server-side-applies `postern_crds::crds()` and waits until each is
/// Established. Idempotent, and safe when parallel tests call it: every
/// caller applies the same content under the same field manager.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("postern-tests").force();
    for crd in postern_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        apply_with_retry(&api, &name, &crd, &params).await;
    }
    for crd in postern_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(Duration::from_secs(30), established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("waiting for CRD {name}: {e}"),
            Err(_) => panic!("CRD {name} not Established within 30s"),
        }
    }
}

/// Concurrent applies of one object can meet a conflict; the content is
/// the same, so trying again is enough.
async fn apply_with_retry(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    crd: &CustomResourceDefinition,
    params: &PatchParams,
) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match api.patch(name, params, &Patch::Apply(crd)).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("applying CRD {name}: {e}"),
        }
    }
}
