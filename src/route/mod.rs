//! The route table: routes in file order, each matched by method and a matchit path
//! pattern (`{name}` captures, a trailing `{*rest}`), and cache-key templates
//! ([`template`]).
//!
//! Routes match in FILE ORDER, not by matchit's specificity: each route compiles its
//! own one-pattern `matchit::Router` and [`RouteTable::find`] scans them in order,
//! method filter first. So `/{*rest}` listed before `/users/{id}` catches everything,
//! and one path may go to different routes by method (a `PUT` write and a `GET` read
//! of `/users/{id}`). A scan of ~20 one-pattern routers costs well under a
//! microsecond (see `benches/route_match.rs`).
//!
//! matchit's catch-all needs at least one character: `/files/{*rest}` matches
//! `/files/a` but neither `/files/` nor `/files`, and `/{*rest}` does not match `/`
//! (list a `/` route too where that matters).

mod template;

use std::fmt;
use std::sync::Arc;

use http::Method;

use crate::config::RouteConfig;

pub use template::{captures_of, KeyTemplate, TemplateError};

/// Captured path values of one match, as (name, value) in pattern order. Values are
/// as they appear in the path (percent-encoding kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The value captured for `name`, if the pattern has that capture.
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
    /// The validated route as configured.
    pub config: Arc<RouteConfig>,
    /// The compiled `cache.key`, when the route has a cache.
    pub cache_key: Option<KeyTemplate>,
}

impl Route {
    /// True when the route accepts `method` (a route with no `methods` accepts all).
    pub fn accepts(&self, method: &Method) -> bool {
        self.config.methods.is_empty() || self.config.methods.contains(method)
    }
}

/// A request's route and captures.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// The first route, in file order, that matched.
    pub route: &'a Route,
    /// Its captures, in pattern order.
    pub params: Params,
}

/// Why the table could not be built (the config validation should have caught these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {route:?}: {problem}")]
pub struct RouteError {
    /// The route's `name`.
    pub route: String,
    /// What is wrong with it, quoting the offending pattern or template.
    pub problem: String,
}

/// Routes in file order.
pub struct RouteTable {
    routes: Vec<Route>,
    /// One single-pattern router per route, same index as `routes`.
    matchers: Vec<matchit::Router<()>>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl RouteTable {
    /// Compiles every route (path pattern and cache-key template), in file order.
    /// Every problem is returned at once, each naming its route.
    pub fn new(routes: &[RouteConfig]) -> Result<RouteTable, Vec<RouteError>> {
        let mut table = RouteTable {
            routes: Vec::with_capacity(routes.len()),
            matchers: Vec::with_capacity(routes.len()),
        };
        let mut errors = Vec::new();
        for (index, config) in routes.iter().enumerate() {
            let error = |problem: String| RouteError {
                route: config.name.clone(),
                problem,
            };
            let mut ok = true;
            let mut matcher = matchit::Router::new();
            if !config.path.starts_with('/') {
                errors.push(error(format!("path `{}` must start with `/`", config.path)));
                ok = false;
            } else if let Err(e) = matcher.insert(config.path.as_str(), ()) {
                errors.push(error(format!(
                    "invalid path pattern `{}`: {e} (use `{{name}}` captures and a trailing `{{*rest}}`)",
                    config.path
                )));
                ok = false;
            }
            let cache_key = match &config.cache {
                None => None,
                Some(cache) => match KeyTemplate::parse(&cache.key, &captures_of(&config.path)) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        errors.push(error(format!("cache.key `{}`: {e}", cache.key)));
                        ok = false;
                        None
                    }
                },
            };
            if ok {
                table.routes.push(Route {
                    index,
                    config: Arc::new(config.clone()),
                    cache_key,
                });
                table.matchers.push(matcher);
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// The first route, in file order, whose methods and path match. `path` is the
    /// request's path only (`uri.path()`, no query string), as received.
    pub fn find(&self, method: &Method, path: &str) -> Option<RouteMatch<'_>> {
        self.find_with(method, path, |_| true)
    }

    /// [`RouteTable::find`], with the captures copied only for routes `wants_params`
    /// says need them (the others get empty [`Params`]: no allocation per request).
    pub fn find_with(
        &self,
        method: &Method,
        path: &str,
        wants_params: impl Fn(&Route) -> bool,
    ) -> Option<RouteMatch<'_>> {
        self.routes
            .iter()
            .zip(&self.matchers)
            .filter(|(route, _)| route.accepts(method))
            .find_map(|(route, matcher)| {
                let matched = matcher.at(path).ok()?;
                let params = if wants_params(route) {
                    matched
                        .params
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_string()))
                        .collect()
                } else {
                    Vec::new()
                };
                Some(RouteMatch {
                    route,
                    params: Params(params),
                })
            })
    }

    /// Methods accepted on `path` by any route, deduplicated, in file order, for a
    /// helpful 404 detail ("`/users/7` accepts GET, PUT"). A route that accepts every
    /// method adds nothing: it would have matched the request.
    pub fn methods_for(&self, path: &str) -> Vec<Method> {
        let mut methods: Vec<Method> = Vec::new();
        for (route, matcher) in self.routes.iter().zip(&self.matchers) {
            if matcher.at(path).is_err() {
                continue;
            }
            for method in &route.config.methods {
                if !methods.contains(method) {
                    methods.push(method.clone());
                }
            }
        }
        methods
    }

    /// Every route, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests;
