//! One shutdown signal for a process's tasks: a [`Trigger`] that fires once and [`Shutdown`]
//! tokens that tasks clone, check and wait on.

use tokio::sync::watch;

/// Fires the shutdown (or, dropped, counts as fired).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A task's view of the shutdown: cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its first token.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tell every token to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// Another token of this trigger.
    pub fn token(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether the shutdown has fired (or its trigger is gone).
    pub fn is_set(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Wait until the shutdown fires or its trigger is dropped; at once if it already has.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|&fired| fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_sees_the_shutdown_whenever_it_looks() {
        let (trigger, mut early) = channel();
        assert!(!early.is_set());
        trigger.fire();
        // A token made after the fact, and one that waits after the fact, both see it.
        let mut late = trigger.token();
        assert!(late.is_set() && early.is_set());
        late.wait().await;
        early.wait().await;
        // A dropped trigger counts as fired.
        let (trigger, mut token) = channel();
        drop(trigger);
        assert!(token.is_set());
        token.wait().await;
    }
}
