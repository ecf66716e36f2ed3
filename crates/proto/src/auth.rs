//! Bearer-token authentication of the gRPC API, and the caller's scope.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use hookrelay_core::config::{token_sha256, AuthConfig, ConfigError};
use tonic::{Request, Status};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Sees every tenant.
    Admin,
    /// Sees one tenant only.
    Tenant(String),
}

impl Caller {
    /// The caller of a request that went through [`Authenticator::check`];
    /// requests that did not (in-process calls) act as admin.
    pub fn of<T>(request: &Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Admin)
    }

    /// Whether this caller may see `tenant`'s data.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(own) => own == tenant,
        }
    }

    /// The tenant a tenant token is scoped to.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(tenant) => Some(tenant),
        }
    }

    /// The tenant a request acts on, by the API's one rule: every request
    /// has a `tenant` field; a tenant token may leave it empty (its own) and
    /// may not name another; an admin token must name it.
    pub fn tenant_for(&self, named: &str) -> Result<String, TenantError> {
        let tenant = match (named.is_empty(), self) {
            (true, Caller::Tenant(own)) => return Ok(own.clone()),
            (true, Caller::Admin) => return Err(TenantError::Missing),
            (false, Caller::Tenant(own)) if own != named => {
                return Err(TenantError::Foreign {
                    named: named.to_owned(),
                    own: own.clone(),
                })
            }
            (false, _) => named,
        };
        hookrelay_core::event::check_token_path(tenant, false).map_err(TenantError::Invalid)?;
        Ok(tenant.to_owned())
    }
}

/// Why a request's `tenant` field cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// An admin token named no tenant.
    #[error("tenant: {}", MISSING_TENANT)]
    Missing,
    /// A tenant token named another tenant.
    #[error("tenant {named:?}: this token is scoped to tenant {own:?}")]
    Foreign { named: String, own: String },
    /// Not a tenant name.
    #[error("tenant: {0}")]
    Invalid(String),
}

const MISSING_TENANT: &str = "is required with an admin token (a tenant token may leave it empty)";

impl TenantError {
    /// What is wrong, without the field's name: for errors that name the
    /// field themselves (`subscription.tenant`).
    pub fn problem(&self) -> String {
        match self {
            TenantError::Missing => MISSING_TENANT.to_owned(),
            TenantError::Foreign { .. } => self.to_string(),
            TenantError::Invalid(message) => message.clone(),
        }
    }
}

impl From<TenantError> for Status {
    fn from(error: TenantError) -> Self {
        match error {
            TenantError::Foreign { .. } => Status::permission_denied(error.to_string()),
            TenantError::Missing | TenantError::Invalid(_) => {
                Status::invalid_argument(error.to_string())
            }
        }
    }
}

/// Checks `authorization: Bearer <token>` against the configured hashes:
/// those of the configuration and of `auth.tokens_file`, which
/// [`Authenticator::reload`] reads again.
#[derive(Clone)]
pub struct Authenticator {
    config: Arc<AuthConfig>,
    tokens: Arc<RwLock<HashMap<String, Caller>>>,
}

impl Authenticator {
    /// The tokens of `config`, reading `tokens_file` now.
    pub fn new(config: &AuthConfig) -> Result<Self, ConfigError> {
        let tokens = Self::read(config)?;
        Ok(Self {
            config: Arc::new(config.clone()),
            tokens: Arc::new(RwLock::new(tokens)),
        })
    }

    fn read(config: &AuthConfig) -> Result<HashMap<String, Caller>, ConfigError> {
        Ok(config
            .all_entries()?
            .into_iter()
            .map(|(hash, tenant)| (hash, tenant.map_or(Caller::Admin, Caller::Tenant)))
            .collect())
    }

    /// Reads `tokens_file` again and from now on accepts exactly the
    /// configuration's tokens and the file's; returns how many there are.
    /// On an error the tokens in use are kept.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let tokens = Self::read(&self.config)?;
        let count = tokens.len();
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = tokens;
        Ok(count)
    }

    /// The file [`Authenticator::reload`] reads; empty when there is none.
    pub fn tokens_file(&self) -> &str {
        &self.config.tokens_file
    }

    /// Whether no token at all is accepted.
    pub fn is_empty(&self) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// A tonic interceptor: UNAUTHENTICATED without a valid token; the
    /// caller is attached to the request otherwise. The token is never logged.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing bearer token (authorization: Bearer <token>)")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let caller = self
            .tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&token_sha256(token))
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The client side: a tonic interceptor adding `authorization: Bearer
/// <token>` to every call (none without a token).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

/// A token that cannot be sent as a header.
#[derive(Debug, thiserror::Error)]
#[error("the token is not printable ASCII")]
pub struct BadToken;

impl Bearer {
    /// `token` (surrounding whitespace trimmed), or no header at all.
    pub fn new(token: Option<&str>) -> Result<Self, BadToken> {
        token
            .map(|token| {
                format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| BadToken)
            })
            .transpose()
            .map(Self)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC channel that sends a bearer token with every call.
pub type Authed =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

#[cfg(test)]
mod tests {
    use super::*;
    use hookrelay_core::config::TokenConfig;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            admin_token_sha256: token_sha256("root"),
            tokens: vec![TokenConfig {
                sha256: token_sha256("acme-token"),
                tenant: "acme".into(),
            }],
            tokens_file: String::new(),
        })
        .expect("no file to read")
    }

    fn with(header: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        auth().check(request).map(|r| Caller::of(&r))
    }

    #[test]
    fn tokens_map_to_callers() {
        assert_eq!(with(Some("Bearer root")).unwrap(), Caller::Admin);
        assert_eq!(
            with(Some("Bearer acme-token")).unwrap(),
            Caller::Tenant("acme".into())
        );
        for (header, message) in [
            (None, "missing bearer token"),
            (Some("Basic abc"), "authorization must be"),
            (Some("Bearer nope"), "unknown bearer token"),
        ] {
            let status = with(header).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(
                status.message().starts_with(message),
                "{}",
                status.message()
            );
        }
        assert!(Caller::Tenant("acme".into()).sees("acme"));
        assert!(!Caller::Tenant("acme".into()).sees("globex"));
    }

    #[test]
    fn the_tenant_rule() {
        let acme = Caller::Tenant("acme".into());
        assert_eq!(acme.tenant_for(""), Ok("acme".into()));
        assert_eq!(acme.tenant_for("acme"), Ok("acme".into()));
        let foreign = acme.tenant_for("globex").unwrap_err();
        assert_eq!(
            Status::from(foreign).message(),
            "tenant \"globex\": this token is scoped to tenant \"acme\""
        );
        assert_eq!(Caller::Admin.tenant_for("globex"), Ok("globex".into()));
        let missing = Status::from(Caller::Admin.tenant_for("").unwrap_err());
        assert_eq!(missing.code(), tonic::Code::InvalidArgument);
        assert!(
            missing.message().starts_with("tenant: is required"),
            "{missing:?}"
        );
        let wild = Status::from(Caller::Admin.tenant_for("a.*").unwrap_err());
        assert_eq!(wild.code(), tonic::Code::InvalidArgument);
    }
}
