//! Who is calling: the API key's project and role, set on every request by
//! the auth middleware.

/// The identity a request counts against for per-key limits: the API key's
/// id, or `addr:<client ip>` when the server runs without keys. Inserted into
/// the request's extensions by the auth middleware.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerId(pub String);
