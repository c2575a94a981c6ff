//! Who talks to the control plane: a client for a kubeconfig, and ServiceAccount identities
//! with TokenRequest tokens, for running a program under its own account.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    client::{ClientBuilder, ConfigExt},
    config::{KubeConfigOptions, Kubeconfig},
};

use super::kubeconfig;

/// A client for a kubeconfig held in memory (its current context).
pub async fn client_from_kubeconfig(kubeconfig: Kubeconfig) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("reading the kubeconfig")?;
    Client::try_from(config).context("building a client")
}

/// A client for a kubeconfig without kube's logging layer, for probing a server that is still
/// starting: kube logs every connection error and 5xx at ERROR, and a start is not an error.
pub(crate) async fn quiet_client_from_kubeconfig(kubeconfig: Kubeconfig) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("reading the kubeconfig")?;
    let connector = config
        .rustls_https_connector()
        .context("building the TLS connector")?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().context("building the auth layer")?)
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(ClientBuilder::new(service, config.default_namespace).build())
}

/// Requests a token for ServiceAccount `namespace/name`, valid for `ttl`.
pub async fn request_token(
    admin: &Client,
    namespace: &str,
    name: &str,
    ttl: Duration,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?;
    response
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("the TokenRequest for {namespace}/{name} returned no token"))
}

/// A kubeconfig acting as ServiceAccount `namespace/name` on the cluster of
/// `admin_kubeconfig`, with a fresh TokenRequest token valid for `ttl`.
pub async fn service_account_kubeconfig(
    admin_kubeconfig: &Kubeconfig,
    namespace: &str,
    name: &str,
    ttl: Duration,
) -> Result<Kubeconfig> {
    let admin = client_from_kubeconfig(admin_kubeconfig.clone()).await?;
    let token = request_token(&admin, namespace, name, ttl).await?;
    kubeconfig::with_token(
        admin_kubeconfig,
        &format!("{namespace}-{name}"),
        token,
        namespace,
    )
}
