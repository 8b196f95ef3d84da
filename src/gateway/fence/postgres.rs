//! The `postgres` fence: a query on a `[databases.NAME]` (bounded by its
//! `query_timeout`) returning rows of `(log, position)`.

use std::sync::Arc;

use super::FenceError;
use crate::config::FenceConfig;
use crate::database::{rows, Database};
use crate::position::PositionVector;

#[derive(Debug)]
pub struct PostgresFence {
    pub database: Arc<Database>,
    pub config: FenceConfig,
}

impl PostgresFence {
    pub async fn read(&self) -> Result<PositionVector, FenceError> {
        let rows = self.database.query(&self.config.sql).await?;
        let position = rows::positions(&rows)?;
        if position.is_empty() {
            return Err("the fence query returned no position".into());
        }
        Ok(position)
    }

    pub fn describe(&self) -> String {
        let what = match self.config.preset {
            Some(p) => format!("preset {}", p.as_str()),
            None => "query".to_string(),
        };
        format!("database {} ({what})", self.database.name())
    }
}
