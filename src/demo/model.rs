//! The write side's data: the `users` event log, the write model it folds into, and
//! the JSON merge used by `PATCH`.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tokio::time::Instant;

/// The one log the demo writes: its positions are `1, 2, 3, ...`.
pub const LOG: &str = "users";

/// One committed write, as the projectors see it.
#[derive(Debug)]
pub struct Event {
    /// Position in [`LOG`], starting at 1.
    pub position: u64,
    /// The user the event is about.
    pub id: String,
    /// The user's JSON after the event, or `None` when the user was deleted. Projectors
    /// store it as is, so read models have the same shape as the write model.
    pub state: Option<Value>,
    /// When the command service committed it; the projectors' lag counts from here.
    pub committed_at: Instant,
}

/// What a command does to a user.
#[derive(Debug)]
pub enum Command {
    /// `PUT`/`POST`: the body replaces the user.
    Replace(Map<String, Value>),
    /// `PATCH`: the body is merged over the user (RFC 7396 merge patch: `null` removes
    /// a field, nested objects merge). Patching a missing user creates it.
    Merge(Map<String, Value>),
    /// `DELETE`: the user is removed (deleting a missing user is still an event, so
    /// deletes are idempotent and always report a position).
    Delete,
}

/// The primary's state: the log head and every user's current JSON.
#[derive(Debug, Default)]
pub struct WriteModel {
    head: u64,
    users: HashMap<String, Value>,
}

impl WriteModel {
    /// The last position written (0 before the first write).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The user's current JSON, if it exists.
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.users.get(id)
    }

    /// Appends the event `command` produces and applies it; returns the event. The
    /// stored JSON always carries `"id"` and `"version"` (the event's position), set
    /// after the body so a client cannot forge them.
    pub fn apply(&mut self, id: &str, command: Command) -> Event {
        self.head += 1;
        let position = self.head;
        let state =
            next_state(self.users.get(id).cloned(), command).map(|user| stamp(user, id, position));
        match &state {
            Some(user) => {
                self.users.insert(id.to_owned(), user.clone());
            }
            None => {
                self.users.remove(id);
            }
        }
        Event {
            position,
            id: id.to_owned(),
            state,
            committed_at: Instant::now(),
        }
    }
}

/// The user's JSON after `command`, from its JSON before (`None`: no such user), or
/// `None` when the command deletes it. Not stamped: see [`stamp`]. The demo's
/// PostgreSQL and NATS variants store this and stamp the position the log gave it.
pub fn next_state(previous: Option<Value>, command: Command) -> Option<Value> {
    match command {
        Command::Replace(body) => Some(Value::Object(body)),
        Command::Merge(patch) => {
            let mut user = previous.unwrap_or_else(|| Value::Object(Map::new()));
            merge_patch(&mut user, &Value::Object(patch));
            Some(user)
        }
        Command::Delete => None,
    }
}

/// Sets `"id"` and `"version"` on a user object.
pub fn stamp(mut user: Value, id: &str, position: u64) -> Value {
    if let Value::Object(fields) = &mut user {
        fields.insert("id".to_owned(), Value::from(id));
        fields.insert("version".to_owned(), Value::from(position));
    }
    user
}

/// RFC 7396 JSON merge patch of `patch` onto `target`. Recursion is bounded by
/// serde_json's parser depth limit (128), so request bodies cannot overflow the stack.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(fields) = target {
        for (key, value) in patch_fields {
            if value.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(fields) => fields,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut user = json!({"name": "ada", "email": "a@x", "tags": {"a": 1}, "n": [1]});
        merge_patch(
            &mut user,
            &json!({"email": null, "tags": {"b": 2}, "n": [2], "new": true}),
        );
        assert_eq!(
            user,
            json!({"name": "ada", "tags": {"a": 1, "b": 2}, "n": [2], "new": true})
        );
    }

    #[test]
    fn positions_count_up_and_stamp_id_and_version() {
        let mut model = WriteModel::default();
        let first = model.apply("7", Command::Replace(object(json!({"name": "ada"}))));
        let second = model.apply("7", Command::Merge(object(json!({"version": 99}))));
        assert_eq!((first.position, second.position, model.head()), (1, 2, 2));
        assert_eq!(
            model.get("7"),
            Some(&json!({"name": "ada", "id": "7", "version": 2}))
        );
    }

    #[test]
    fn replace_drops_old_fields_and_delete_removes() {
        let mut model = WriteModel::default();
        model.apply("1", Command::Replace(object(json!({"a": 1}))));
        model.apply("1", Command::Replace(object(json!({"b": 2}))));
        assert_eq!(
            model.get("1"),
            Some(&json!({"b": 2, "id": "1", "version": 2}))
        );
        let deleted = model.apply("1", Command::Delete);
        assert_eq!((deleted.position, deleted.state), (3, None));
        assert_eq!(model.get("1"), None);
    }

    #[test]
    fn patching_a_missing_user_creates_it() {
        let mut model = WriteModel::default();
        model.apply("9", Command::Merge(object(json!({"a": {"b": 1}}))));
        assert_eq!(
            model.get("9"),
            Some(&json!({"a": {"b": 1}, "id": "9", "version": 1}))
        );
    }
}
