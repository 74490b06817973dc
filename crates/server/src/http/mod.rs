//! Plain HTTP: the router and the static demo page.

pub(crate) mod api;
pub(crate) mod assets;
pub(crate) mod client_ip;
pub(crate) mod headers;
pub(crate) mod origin;
pub(crate) mod routes;
