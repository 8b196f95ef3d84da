//! The route table: routes in file order, each matched by method and a matchit path
//! pattern (`{name}` captures, a trailing `{*rest}`), and cache-key templates.
//! (Stub: the routing helper fills in the bodies; the signatures are the contract.)

use std::sync::Arc;

use http::Method;

use crate::config::RouteConfig;

/// A cache-key template such as `user:{id}`.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    _private: (),
}

/// Why a key template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{0}}}` is not a capture of the route's path (captures: {1})")]
    UnknownCapture(String, String),
    #[error("unbalanced `{{` or `}}` in `{0}`")]
    Unbalanced(String),
    #[error("empty key template")]
    Empty,
}

impl KeyTemplate {
    /// Parses `template`, checking each `{name}` against `captures`.
    pub fn parse(template: &str, captures: &[String]) -> Result<KeyTemplate, TemplateError> {
        let _ = (template, captures);
        todo!("routing helper")
    }

    /// Expands with the captured values (`params` as returned by [`RouteTable::find`]).
    pub fn expand(&self, params: &Params) -> String {
        let _ = params;
        todo!("routing helper")
    }
}

/// The capture names of a path pattern, in order (`/users/{id}/{*rest}` -> `id`, `rest`).
pub fn captures_of(pattern: &str) -> Vec<String> {
    let _ = pattern;
    todo!("routing helper")
}

/// Captured path values of one match, as (name, value) in pattern order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Index in file order.
    pub index: usize,
    pub config: Arc<RouteConfig>,
    /// The compiled `cache.key`, when the route has a cache.
    pub cache_key: Option<KeyTemplate>,
}

/// A request's route and captures.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    pub params: Params,
}

/// Why the table could not be built (the config validation should have caught these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route:?}: {problem}")]
pub struct RouteError {
    pub route: String,
    pub problem: String,
}

/// Routes in file order.
#[derive(Debug)]
pub struct RouteTable {
    _private: (),
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> Result<RouteTable, Vec<RouteError>> {
        let _ = routes;
        todo!("routing helper")
    }

    /// The first route, in file order, whose methods and path match.
    pub fn find(&self, method: &Method, path: &str) -> Option<RouteMatch<'_>> {
        let _ = (method, path);
        todo!("routing helper")
    }

    /// Methods accepted on `path` by any route, for a helpful 404 detail.
    pub fn methods_for(&self, path: &str) -> Vec<Method> {
        let _ = path;
        todo!("routing helper")
    }

    pub fn routes(&self) -> &[Route] {
        todo!("routing helper")
    }
}
