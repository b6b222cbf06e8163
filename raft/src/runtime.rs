//! The async runtime openraft runs on: tokio, exactly as openraft's own [`TokioRuntime`], except
//! for where its random numbers come from.
//!
//! openraft draws one random number per election timeout. [`TokioRuntime`] takes it from
//! `rand::thread_rng()`, which is seeded from the operating system and cannot be seeded by
//! anyone. [`Runtime`] takes it from a per-thread generator that is also seeded from the
//! operating system on first use, unless [`seed_thread_rng`] seeded it first: a simulation that
//! runs a whole cluster on one thread seeds it, and a seed then replays the same elections.
//! Production never calls it, and behaves as with [`TokioRuntime`].

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// openraft's [`AsyncRuntime`] for redoubt: [`TokioRuntime`] with a seedable
/// [`AsyncRuntime::thread_rng`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

type Tokio = TokioRuntime;

impl AsyncRuntime for Runtime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    #[inline]
    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    #[inline]
    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    #[inline]
    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    #[inline]
    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    #[inline]
    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    #[inline]
    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    #[inline]
    fn thread_rng() -> ThreadRng {
        ThreadRng { _not_send: PhantomData }
    }

    #[inline]
    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        Tokio::oneshot()
    }
}

thread_local! {
    static RNG: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// Seeds this thread's generator: every number openraft draws on this thread from now on
/// follows from `seed`. For simulations, which run every node of a cluster on one thread.
pub fn seed_thread_rng(seed: u64) {
    RNG.with(|rng| *rng.borrow_mut() = Some(SmallRng::seed_from_u64(seed)));
}

/// A handle on this thread's generator (like `rand::rngs::ThreadRng`, it stays on its thread).
#[derive(Debug)]
pub struct ThreadRng {
    _not_send: PhantomData<*const ()>,
}

impl ThreadRng {
    fn with<R>(f: impl FnOnce(&mut SmallRng) -> R) -> R {
        RNG.with(|rng| f(rng.borrow_mut().get_or_insert_with(SmallRng::from_entropy)))
    }
}

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        Self::with(|r| r.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        Self::with(|r| r.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        Self::with(|r| r.fill_bytes(dest))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        Self::with(|r| r.try_fill_bytes(dest))
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn a_seed_replays_the_same_numbers() {
        let draw = || (0..8).map(|_| Runtime::thread_rng().gen_range(300..600u64)).collect::<Vec<_>>();
        seed_thread_rng(7);
        let first = draw();
        seed_thread_rng(7);
        assert_eq!(draw(), first);
        seed_thread_rng(8);
        assert_ne!(draw(), first);
        assert!(first.iter().all(|t| (300..600).contains(t)));
    }
}
