//! What more than one of these test files needs.

/// A sidecar config for one host (verona.lit) with its token files beside it (`hook.token`,
/// `admin.token`, `api.token`) and the store `store`, for runs that stop at `--check` or a
/// token check (its API URL leads nowhere).
pub const CONFIG: &str = "listen = \"127.0.0.1:0\"\nstore = \"store\"\nhook_token_file = \"hook.token\"\n\
     admin_token_file = \"admin.token\"\n[[host]]\nname = \"verona.lit\"\n\
     api_url = \"http://127.0.0.1:1/api\"\napi_token_file = \"api.token\"\n";
