//! Wait slots: a rule waiting for an HTTP answer gives back the CPU slot it runs in.

use std::cell::RefCell;
use std::sync::Arc;

/// Lets a rule that waits for an HTTP answer give back the CPU slot it runs in (the server
/// bounds how many rules compute at once), and take one again before it goes on.
pub trait WaitSlot: Send + Sync {
    /// Called before the rule's thread starts waiting for an answer.
    fn release(&self);
    /// Called once the answer is in, before the rule goes on; may block until a slot is free.
    fn reacquire(&self);
}

thread_local! {
    static WAIT_SLOT: RefCell<Option<Arc<dyn WaitSlot>>> = const { RefCell::new(None) };
}

/// Runs `f` with `slot` as this thread's [`WaitSlot`]: every HTTP call a rule makes inside `f`
/// releases it while waiting. The previous slot is restored when `f` returns or panics.
pub fn with_wait_slot<R>(slot: Arc<dyn WaitSlot>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn WaitSlot>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            WAIT_SLOT.with(|s| *s.borrow_mut() = previous);
        }
    }
    let previous = WAIT_SLOT.with(|s| s.borrow_mut().replace(slot));
    let _restore = Restore(previous);
    f()
}

/// Holds the released slot; takes it back on drop.
pub(super) struct Released(Option<Arc<dyn WaitSlot>>);

impl Released {
    pub(super) fn now() -> Released {
        let slot = WAIT_SLOT.with(|s| s.borrow().clone());
        if let Some(s) = &slot {
            s.release();
        }
        Released(slot)
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.reacquire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl WaitSlot for Count {
        fn release(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn reacquire(&self) {}
    }

    #[test]
    fn the_wait_slot_is_restored_even_on_panic() {
        let outer: Arc<dyn WaitSlot> = Arc::new(Count::default());
        let inner: Arc<dyn WaitSlot> = Arc::new(Count::default());
        let current = || WAIT_SLOT.with(|s| s.borrow().clone());
        with_wait_slot(outer.clone(), || {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_wait_slot(inner.clone(), || {
                    assert!(current().is_some_and(|s| Arc::ptr_eq(&s, &inner)));
                    panic!("boom")
                })
            }));
            assert!(caught.is_err());
            assert!(current().is_some_and(|s| Arc::ptr_eq(&s, &outer)));
        });
        assert!(current().is_none());
    }
}
