//! What a failing watch most likely needs, in words an operator acts on: a raw `404 page not
//! found` or `client error (Connect)` does not say "install the CRD" or "the API server is
//! down", and at startup these are the usual causes.

use kube::runtime::watcher;

use super::errors::WatchErrorReason;

/// The likely cause of `error` and what to do, for a log line; `None` when it says enough.
pub fn likely_cause(error: &watcher::Error) -> Option<&'static str> {
    match WatchErrorReason::of(error) {
        WatchErrorReason::Unreachable => {
            Some("the API server does not answer: check the kubeconfig's server and the network")
        }
        WatchErrorReason::NotServed => Some(
            "the resource is not served: is the StatefulCluster CRD installed (kubectl apply -f deploy/crd/)?",
        ),
        WatchErrorReason::Unauthorized => {
            Some("unauthorized: the kubeconfig's credentials are not accepted")
        }
        WatchErrorReason::Forbidden => {
            Some("forbidden: the ServiceAccount lacks the rights its deploy/*/rbac.yaml grants")
        }
        WatchErrorReason::Expired | WatchErrorReason::ServerBusy | WatchErrorReason::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn names_the_crd_the_rights_or_nothing() {
        assert!(likely_cause(&api(404)).is_some_and(|c| c.contains("CRD")));
        assert!(likely_cause(&api(403)).is_some_and(|c| c.contains("rights")));
        assert!(likely_cause(&api(401)).is_some_and(|c| c.contains("credentials")));
        assert_eq!(likely_cause(&api(500)), None);
        assert_eq!(likely_cause(&watcher::Error::NoResourceVersion), None);
    }
}
