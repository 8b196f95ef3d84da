//! One read instance's state: its read model and checkpoint, committed together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use serde_json::Value;
use tokio::sync::watch;

use super::model::Event;

/// A read instance (replica) named `r<i>`: the users as of its checkpoint.
#[derive(Debug)]
pub struct ReadInstance {
    name: String,
    model: RwLock<ReadModel>,
    checkpoint: watch::Sender<u64>,
    served: AtomicU64,
}

/// The read model and the position it reflects, under one lock so a reader never sees
/// a checkpoint ahead of the data (the "token honoured but the write still missing"
/// trap).
#[derive(Debug, Default)]
struct ReadModel {
    checkpoint: u64,
    users: HashMap<String, Value>,
}

impl ReadInstance {
    /// An empty instance at checkpoint 0.
    pub fn new(name: String) -> Self {
        ReadInstance {
            name,
            model: RwLock::new(ReadModel::default()),
            checkpoint: watch::Sender::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// The instance's name (`r0`, `r1`, ...), as pushed in `?instance=`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position this instance has fully applied.
    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }

    /// A receiver that sees every checkpoint advance (after the read model has it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.checkpoint.subscribe()
    }

    /// Applies `event` to the read model, then advances the checkpoint to it. Events
    /// arrive in order; an older one is ignored, so the checkpoint only moves forward.
    pub fn apply(&self, event: &Event) {
        {
            let mut model = self.model.write().unwrap_or_else(PoisonError::into_inner);
            if event.position <= model.checkpoint {
                return;
            }
            match &event.state {
                Some(user) => {
                    model.users.insert(event.id.clone(), user.clone());
                }
                None => {
                    model.users.remove(&event.id);
                }
            }
            model.checkpoint = event.position;
        }
        self.checkpoint.send_replace(event.position);
    }

    /// The checkpoint and the user as of that checkpoint, read together.
    pub fn lookup(&self, id: &str) -> (u64, Option<Value>) {
        let model = self.read();
        (model.checkpoint, model.users.get(id).cloned())
    }

    /// Counts one user read served (the `/checkpoint` polls are not counted).
    pub fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// User reads served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn read(&self) -> RwLockReadGuard<'_, ReadModel> {
        self.model.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::time::Instant;

    fn event(position: u64, state: Option<Value>) -> Event {
        Event {
            position,
            id: "1".to_owned(),
            state,
            committed_at: Instant::now(),
        }
    }

    #[test]
    fn the_checkpoint_moves_with_the_data_and_only_forward() {
        let instance = ReadInstance::new("r0".to_owned());
        let mut checkpoints = instance.subscribe();
        instance.apply(&event(2, Some(json!({"version": 2}))));
        assert!(checkpoints.has_changed().unwrap_or(false));
        assert_eq!(*checkpoints.borrow_and_update(), 2);
        assert_eq!(instance.lookup("1"), (2, Some(json!({"version": 2}))));

        instance.apply(&event(1, None));
        assert_eq!(instance.checkpoint(), 2, "an older event is ignored");
        assert_eq!(instance.lookup("1"), (2, Some(json!({"version": 2}))));

        instance.apply(&event(3, None));
        assert_eq!(instance.lookup("1"), (3, None));
    }
}
