//! [`SimObjectStore`]: a simulated S3-compatible object store with seeded fault
//! injection, implementing [`ObjectStorePort`].
//!
//! Objects live in a `BTreeMap`, so listings come in key order. Every applied put gets
//! a fresh etag (`sim-<n>`, a counter), even for identical bytes. Conditional puts are
//! exact: `IfAbsent` fails with `AlreadyExists` when the key exists; `IfMatch { etag }`
//! fails with `PreconditionFailed` unless the key exists with that etag. Deleting a
//! missing key succeeds.
//!
//! # Faults ([`StoreFaultPlan`])
//!
//! Decided when a call starts, from the store's seeded RNG, in this order:
//! - a 503 SlowDown burst in progress answers `Throttled`; otherwise a call starts a
//!   burst with `throttle_burst_ppm`: it and the next `1..throttle_burst_calls_max`
//!   calls answer `Throttled`. Nothing is applied;
//! - `error_before_ppm`: `Transient`, nothing applied;
//! - `error_after_ppm` (put and delete only): the operation **is applied** (the put is
//!   stored, whatever its outcome was, or the delete done) but the caller gets
//!   `Transient`: the ambiguous timeout;
//! - `latency`: a seeded delay split around the moment the operation applies, so
//!   other callers may see a put before its own caller hears back.
//!
//! Object loss (to exercise repair) is explicit: [`SimObjectStore::lose_object`],
//! [`SimObjectStore::lose_objects_by_plan`] which drops each object with
//! `object_loss_ppm`, or [`SimObjectStore::lose_objects_where`], the same over the keys
//! a filter picks with the caller's generator (the store's own fault draws stay as
//! they were). [`SimObjectStore::set_faults_enabled`]`(false)` turns errors and
//! throttling off (latency stays) for a liveness phase.
//!
//! **Invariants**
//! - An operation answered with an error before it applied changed nothing; one that
//!   answered `Ok` applied exactly once.
//! - Etags are never reused: two applied puts never return the same etag.
//! - `list` returns exactly the keys with the prefix, in ascending key order.
//! - The same seed, plan and sequence of calls give the same results and faults.

use crate::seed::{LatencyPlan, PPM_ONE, chance, pause, swarm_rate_ppm};
use aof2_core::driver::ObjectStorePort;
use aof2_core::io::{ObjectErrorKind, ObjectMeta, PutMode};
use aof2_core::retry::DetRng;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Which faults are on, and how likely; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFaultPlan {
    pub latency: LatencyPlan,
    pub error_before_ppm: u32,
    /// Put and delete only: applied, then `Transient`.
    pub error_after_ppm: u32,
    /// Probability that a call starts a run of `Throttled` answers.
    pub throttle_burst_ppm: u32,
    /// A burst answers `1..=throttle_burst_calls_max` calls (the first included).
    pub throttle_burst_calls_max: u32,
    /// Per object, in [`SimObjectStore::lose_objects_by_plan`].
    pub object_loss_ppm: u32,
}

impl StoreFaultPlan {
    /// No faults, no latency.
    #[must_use]
    pub const fn none() -> Self {
        StoreFaultPlan {
            latency: LatencyPlan::NONE,
            error_before_ppm: 0,
            error_after_ppm: 0,
            throttle_burst_ppm: 0,
            throttle_burst_calls_max: 1,
            object_loss_ppm: 0,
        }
    }

    /// Swarm testing: the seed decides which faults are on (each half the time), how
    /// likely each is, how long throttle bursts run, and the latency distribution.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        const BURST_CALLS_MAX: [u32; 3] = [1, 5, 20];
        let mut rng = DetRng::new(seed);
        let error_before_ppm = swarm_rate_ppm(&mut rng);
        let error_after_ppm = swarm_rate_ppm(&mut rng);
        let throttle_burst_ppm = swarm_rate_ppm(&mut rng);
        let throttle_burst_calls_max =
            BURST_CALLS_MAX[rng.below(BURST_CALLS_MAX.len() as u64) as usize];
        let object_loss_ppm = swarm_rate_ppm(&mut rng);
        let latency = LatencyPlan::from_rng(&mut rng);
        StoreFaultPlan {
            latency,
            error_before_ppm,
            error_after_ppm,
            throttle_burst_ppm,
            throttle_burst_calls_max,
            object_loss_ppm,
        }
    }

    /// This plan without latency (for tests that run without a runtime).
    #[must_use]
    pub const fn without_latency(self) -> Self {
        StoreFaultPlan {
            latency: LatencyPlan::NONE,
            ..self
        }
    }

    fn validate(&self) {
        assert!(
            self.throttle_burst_calls_max >= 1,
            "a throttle burst answers at least one call"
        );
        for ppm in [
            self.error_before_ppm,
            self.error_after_ppm,
            self.throttle_burst_ppm,
            self.object_loss_ppm,
            self.latency.tail_ppm,
        ] {
            assert!(ppm <= PPM_ONE, "a probability is at most {PPM_ONE} ppm");
        }
    }
}

/// Counters of every fault injected, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStoreStats {
    /// Calls that were delayed.
    pub delayed_calls: u64,
    pub errors_before: u64,
    /// Puts and deletes that applied but answered `Transient`.
    pub errors_after: u64,
    pub throttle_bursts: u64,
    /// Calls answered `Throttled`.
    pub throttled_calls: u64,
    pub objects_lost: u64,
}

#[derive(Debug, Clone)]
struct StoredObject {
    bytes: Bytes,
    etag: String,
}

/// The fault decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Throttled,
    Before,
    After,
}

#[derive(Debug)]
struct StoreState {
    plan: StoreFaultPlan,
    faults_enabled: bool,
    rng: DetRng,
    objects: BTreeMap<String, StoredObject>,
    next_etag: u64,
    /// Calls left in the current 503 burst.
    throttled_calls_left: u32,
    stats: SimStoreStats,
}

impl StoreState {
    fn fault(&mut self, mutating: bool) -> Fault {
        if !self.faults_enabled {
            return Fault::None;
        }
        if self.throttled_calls_left == 0 && chance(&mut self.rng, self.plan.throttle_burst_ppm) {
            self.stats.throttle_bursts += 1;
            self.throttled_calls_left = 1 + self
                .rng
                .below(u64::from(self.plan.throttle_burst_calls_max))
                as u32;
        }
        if self.throttled_calls_left > 0 {
            self.throttled_calls_left -= 1;
            self.stats.throttled_calls += 1;
            return Fault::Throttled;
        }
        if chance(&mut self.rng, self.plan.error_before_ppm) {
            self.stats.errors_before += 1;
            return Fault::Before;
        }
        if mutating && chance(&mut self.rng, self.plan.error_after_ppm) {
            self.stats.errors_after += 1;
            return Fault::After;
        }
        Fault::None
    }

    fn meta(key: &str, object: &StoredObject) -> ObjectMeta {
        ObjectMeta {
            key: key.to_owned(),
            size: object.bytes.len() as u64,
            etag: Some(object.etag.clone()),
        }
    }

    fn put(
        &mut self,
        key: &str,
        bytes: Bytes,
        mode: &PutMode,
    ) -> Result<Option<String>, ObjectErrorKind> {
        match (mode, self.objects.get(key)) {
            (PutMode::IfAbsent, Some(_)) => return Err(ObjectErrorKind::AlreadyExists),
            (PutMode::IfMatch { etag }, Some(current)) if &current.etag != etag => {
                return Err(ObjectErrorKind::PreconditionFailed);
            }
            (PutMode::IfMatch { .. }, None) => return Err(ObjectErrorKind::PreconditionFailed),
            _ => {}
        }
        let etag = format!("sim-{}", self.next_etag);
        self.next_etag += 1;
        self.objects.insert(
            key.to_owned(),
            StoredObject {
                bytes,
                etag: etag.clone(),
            },
        );
        Ok(Some(etag))
    }

    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<(Bytes, u64), ObjectErrorKind> {
        let object = self.objects.get(key).ok_or(ObjectErrorKind::NotFound)?;
        let size = object.bytes.len() as u64;
        let start = start.min(size);
        let end = end.clamp(start, size);
        let range = usize::try_from(start).expect("start <= size, which fits usize")
            ..usize::try_from(end).expect("end <= size, which fits usize");
        Ok((object.bytes.slice(range), size))
    }

    fn list(&self, prefix: &str) -> Vec<ObjectMeta> {
        self.objects
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, object)| Self::meta(key, object))
            .collect()
    }
}

/// A simulated object store; see the module doc. Share it as an
/// `Arc<SimObjectStore>`.
#[derive(Debug)]
pub struct SimObjectStore {
    state: Mutex<StoreState>,
}

impl SimObjectStore {
    /// An empty store whose faults draw from `seed`.
    #[must_use]
    pub fn new(seed: u64, plan: StoreFaultPlan) -> Self {
        plan.validate();
        SimObjectStore {
            state: Mutex::new(StoreState {
                plan,
                faults_enabled: true,
                rng: DetRng::new(seed),
                objects: BTreeMap::new(),
                next_etag: 0,
                throttled_calls_left: 0,
                stats: SimStoreStats::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, StoreState> {
        self.state
            .lock()
            .expect("no thread panics while holding the simulated store's lock")
    }

    /// Runs one call: decide its fault and delay, wait, apply (unless the fault comes
    /// before), wait again, answer.
    async fn call<T: Send>(
        &self,
        mutating: bool,
        operation: impl FnOnce(&mut StoreState) -> Result<T, ObjectErrorKind> + Send,
    ) -> Result<T, ObjectErrorKind> {
        let (fault, delay) = {
            let mut state = self.state();
            let fault = state.fault(mutating);
            let latency = state.plan.latency;
            let delay = latency.draw(&mut state.rng);
            if !delay.is_zero() {
                state.stats.delayed_calls += 1;
            }
            (fault, delay)
        };
        pause(delay.before_us).await;
        let result = match fault {
            Fault::Throttled => Err(ObjectErrorKind::Throttled),
            Fault::Before => Err(ObjectErrorKind::Transient),
            Fault::None | Fault::After => operation(&mut self.state()),
        };
        pause(delay.after_us).await;
        match fault {
            Fault::After => Err(ObjectErrorKind::Transient),
            Fault::None | Fault::Throttled | Fault::Before => result,
        }
    }

    /// Turns errors and throttling on or off (latency stays).
    pub fn set_faults_enabled(&self, enabled: bool) {
        let mut state = self.state();
        state.faults_enabled = enabled;
        if !enabled {
            state.throttled_calls_left = 0;
        }
    }

    #[must_use]
    pub fn faults_enabled(&self) -> bool {
        self.state().faults_enabled
    }

    /// Replaces the fault plan; the RNG continues.
    pub fn set_plan(&self, plan: StoreFaultPlan) {
        plan.validate();
        self.state().plan = plan;
    }

    #[must_use]
    pub fn plan(&self) -> StoreFaultPlan {
        self.state().plan
    }

    #[must_use]
    pub fn stats(&self) -> SimStoreStats {
        self.state().stats
    }

    /// Drops `key` as if the store lost it; returns whether it existed.
    pub fn lose_object(&self, key: &str) -> bool {
        let mut state = self.state();
        let lost = state.objects.remove(key).is_some();
        if lost {
            state.stats.objects_lost += 1;
        }
        lost
    }

    /// Drops each object with the plan's `object_loss_ppm` (in key order, drawing
    /// from the store's RNG); returns the keys lost. Applies whether or not faults
    /// are enabled: it is an explicit request.
    pub fn lose_objects_by_plan(&self) -> Vec<String> {
        let mut state = self.state();
        let ppm = state.plan.object_loss_ppm;
        let keys: Vec<String> = state.objects.keys().cloned().collect();
        let lost: Vec<String> = keys
            .into_iter()
            .filter(|_| chance(&mut state.rng, ppm))
            .collect();
        for key in &lost {
            state.objects.remove(key);
        }
        state.stats.objects_lost += lost.len() as u64;
        lost
    }

    /// Drops each object whose key `pick` accepts with the plan's `object_loss_ppm`, in
    /// key order, drawing from `rng` (so the store's own fault schedule is unchanged);
    /// returns the keys lost. Applies whether or not faults are enabled.
    pub fn lose_objects_where(&self, rng: &mut DetRng, pick: impl Fn(&str) -> bool) -> Vec<String> {
        let mut state = self.state();
        let ppm = state.plan.object_loss_ppm;
        let lost: Vec<String> = state
            .objects
            .keys()
            .filter(|key| pick(key.as_str()))
            .filter(|_| chance(rng, ppm))
            .cloned()
            .collect();
        for key in &lost {
            state.objects.remove(key);
        }
        state.stats.objects_lost += lost.len() as u64;
        lost
    }

    /// The bytes under `key`, if any (no faults, no delay).
    #[must_use]
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.state()
            .objects
            .get(key)
            .map(|object| object.bytes.clone())
    }

    /// The etag of `key`, if it exists.
    #[must_use]
    pub fn etag(&self, key: &str) -> Option<String> {
        self.state()
            .objects
            .get(key)
            .map(|object| object.etag.clone())
    }

    /// Every key, in order.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }
}

#[async_trait]
impl ObjectStorePort for SimObjectStore {
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<Option<String>, ObjectErrorKind> {
        self.call(true, |state| state.put(key, bytes, &mode)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectErrorKind> {
        self.call(false, |state| {
            state
                .objects
                .get(key)
                .map(|object| object.bytes.clone())
                .ok_or(ObjectErrorKind::NotFound)
        })
        .await
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<(Bytes, u64), ObjectErrorKind> {
        self.call(false, |state| state.get_range(key, start, end))
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, ObjectErrorKind> {
        self.call(false, |state| {
            state
                .objects
                .get(key)
                .map(|object| StoreState::meta(key, object))
                .ok_or(ObjectErrorKind::NotFound)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectErrorKind> {
        self.call(true, |state| {
            state.objects.remove(key);
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectErrorKind> {
        self.call(false, |state| Ok(state.list(prefix))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn store(plan: StoreFaultPlan) -> SimObjectStore {
        SimObjectStore::new(1, plan)
    }

    #[test]
    fn conditional_puts_are_exact() {
        let store = store(StoreFaultPlan::none());
        block_on(async {
            let first = store.put("k", bytes("1"), PutMode::IfAbsent).await;
            let first = first.unwrap().unwrap();
            assert_eq!(
                store.put("k", bytes("2"), PutMode::IfAbsent).await,
                Err(ObjectErrorKind::AlreadyExists)
            );
            assert_eq!(
                store
                    .put(
                        "k",
                        bytes("2"),
                        PutMode::IfMatch {
                            etag: "sim-999".to_owned()
                        }
                    )
                    .await,
                Err(ObjectErrorKind::PreconditionFailed)
            );
            assert_eq!(
                store
                    .put(
                        "missing",
                        bytes("2"),
                        PutMode::IfMatch {
                            etag: first.clone()
                        }
                    )
                    .await,
                Err(ObjectErrorKind::PreconditionFailed)
            );
            assert_eq!(store.object("k").unwrap(), bytes("1"));
            let second = store
                .put(
                    "k",
                    bytes("2"),
                    PutMode::IfMatch {
                        etag: first.clone(),
                    },
                )
                .await
                .unwrap()
                .unwrap();
            assert_ne!(first, second, "every put gets a new etag");
            // The old etag no longer matches.
            assert_eq!(
                store
                    .put("k", bytes("3"), PutMode::IfMatch { etag: first })
                    .await,
                Err(ObjectErrorKind::PreconditionFailed)
            );
            let third = store.put("k", bytes("2"), PutMode::Overwrite).await;
            assert_ne!(third.unwrap().unwrap(), second, "same bytes, new etag");
            assert_eq!(store.head("k").await.unwrap().size, 1);
        });
    }

    #[test]
    fn list_is_in_key_order_and_ranges_clamp() {
        let store = store(StoreFaultPlan::none());
        block_on(async {
            for key in ["b/2", "a/1", "b/10", "c", "b/1"] {
                store
                    .put(key, bytes("xyz"), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
            let listed: Vec<String> = store
                .list("b/")
                .await
                .unwrap()
                .into_iter()
                .map(|meta| meta.key)
                .collect();
            assert_eq!(listed, ["b/1", "b/10", "b/2"]);
            assert_eq!(store.list("").await.unwrap().len(), 5);
            assert_eq!(store.keys(), ["a/1", "b/1", "b/10", "b/2", "c"]);
            assert_eq!(
                store.get_range("c", 1, 100).await.unwrap(),
                (bytes("yz"), 3)
            );
            assert_eq!(store.get_range("c", 5, 2).await.unwrap(), (bytes(""), 3));
            assert_eq!(store.get("nope").await, Err(ObjectErrorKind::NotFound));
            assert_eq!(store.head("nope").await, Err(ObjectErrorKind::NotFound));
            store.delete("nope").await.unwrap();
            store.delete("c").await.unwrap();
            assert_eq!(store.object("c"), None);
        });
    }

    #[test]
    fn an_error_before_applying_changes_nothing() {
        let store = store(StoreFaultPlan {
            error_before_ppm: PPM_ONE,
            ..StoreFaultPlan::none()
        });
        block_on(async {
            assert_eq!(
                store.put("k", bytes("v"), PutMode::Overwrite).await,
                Err(ObjectErrorKind::Transient)
            );
            assert_eq!(store.object("k"), None);
            assert_eq!(store.list("").await, Err(ObjectErrorKind::Transient));
        });
        assert_eq!(store.stats().errors_before, 2);
    }

    #[test]
    fn an_error_after_applying_leaves_the_effect() {
        let store = store(StoreFaultPlan {
            error_after_ppm: PPM_ONE,
            ..StoreFaultPlan::none()
        });
        block_on(async {
            assert_eq!(
                store.put("k", bytes("v"), PutMode::IfAbsent).await,
                Err(ObjectErrorKind::Transient)
            );
            assert_eq!(store.object("k").unwrap(), bytes("v"));
            // The retry finds its own earlier write.
            assert_eq!(
                store.put("k", bytes("v"), PutMode::IfAbsent).await,
                Err(ObjectErrorKind::Transient)
            );
            assert_eq!(store.object("k").unwrap(), bytes("v"));
            // Reads are never "after" faults.
            assert_eq!(store.get("k").await.unwrap(), bytes("v"));
            assert_eq!(store.delete("k").await, Err(ObjectErrorKind::Transient));
            assert_eq!(store.object("k"), None);
        });
        assert_eq!(store.stats().errors_after, 3);
    }

    #[test]
    fn slow_down_comes_in_bursts() {
        let store = store(StoreFaultPlan {
            throttle_burst_ppm: 50_000,
            throttle_burst_calls_max: 8,
            ..StoreFaultPlan::none()
        });
        let outcomes: Vec<bool> = (0..2_000)
            .map(|_| block_on(store.get("missing")) == Err(ObjectErrorKind::Throttled))
            .collect();
        let throttled = outcomes.iter().filter(|throttled| **throttled).count() as u64;
        let stats = store.stats();
        assert_eq!(stats.throttled_calls, throttled);
        assert!(stats.throttle_bursts > 10);
        assert!(
            stats.throttled_calls > stats.throttle_bursts,
            "bursts, not single errors"
        );
        // Bursts start only when none is running, so a run of throttled calls is at
        // most one burst long.
        let longest_run = outcomes
            .split(|throttled| !throttled)
            .map(<[bool]>::len)
            .max()
            .unwrap();
        assert!((2..=8).contains(&longest_run), "{longest_run}");
        // Turning faults off ends a burst at once.
        store.set_plan(StoreFaultPlan {
            throttle_burst_ppm: PPM_ONE,
            throttle_burst_calls_max: 1_000,
            ..StoreFaultPlan::none()
        });
        assert_eq!(block_on(store.get("x")), Err(ObjectErrorKind::Throttled));
        store.set_faults_enabled(false);
        assert_eq!(block_on(store.get("x")), Err(ObjectErrorKind::NotFound));
    }

    #[test]
    fn objects_are_lost_only_on_request() {
        let store = store(StoreFaultPlan {
            object_loss_ppm: PPM_ONE / 2,
            ..StoreFaultPlan::none()
        });
        block_on(async {
            for index in 0..100 {
                let key = format!("k{index:03}");
                store
                    .put(&key, bytes("v"), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        });
        assert_eq!(store.keys().len(), 100);
        assert!(store.lose_object("k000"));
        assert!(!store.lose_object("k000"));
        let lost = store.lose_objects_by_plan();
        assert!((20..80).contains(&lost.len()), "{}", lost.len());
        for key in &lost {
            assert_eq!(store.object(key), None);
        }
        assert_eq!(store.keys().len(), 99 - lost.len());
        assert_eq!(store.stats().objects_lost, 1 + lost.len() as u64);
    }

    #[test]
    fn a_filtered_loss_picks_only_matching_keys_and_leaves_the_store_rng_alone() {
        let plan = StoreFaultPlan {
            object_loss_ppm: PPM_ONE,
            error_before_ppm: PPM_ONE / 2,
            ..StoreFaultPlan::none()
        };
        let filled = || {
            let store = store(plan);
            block_on(async {
                for index in 0..20 {
                    let key = format!("{}/{index:03}", if index % 2 == 0 { "a" } else { "b" });
                    // Retry the injected errors until each put lands.
                    while store
                        .put(&key, bytes("v"), PutMode::Overwrite)
                        .await
                        .is_err()
                    {}
                }
            });
            store
        };
        let (lossy, untouched) = (filled(), filled());
        let mut rng = DetRng::new(5);
        let lost = lossy.lose_objects_where(&mut rng, |key| key.starts_with("a/"));
        assert_eq!(lost.len(), 10, "every `a/` key at one in one: {lost:?}");
        assert!(lost.iter().all(|key| key.starts_with("a/")));
        assert_eq!(lossy.keys().len(), 10);
        // The next faults are the same as a store that lost nothing.
        let next = |store: &SimObjectStore| {
            block_on(async {
                let mut results = Vec::new();
                for _ in 0..20 {
                    results.push(store.head("b/001").await.is_ok());
                }
                results
            })
        };
        assert_eq!(next(&lossy), next(&untouched));
    }

    fn trace(seed: u64) -> String {
        let store = SimObjectStore::new(seed, StoreFaultPlan::from_seed(seed).without_latency());
        let mut out = String::new();
        block_on(async {
            for round in 0..200 {
                let key = format!("k{}", round % 7);
                out.push_str(&format!(
                    "{:?} {:?} {:?}\n",
                    store.put(&key, bytes("v"), PutMode::IfAbsent).await,
                    store.get(&key).await,
                    store.delete(&format!("k{}", round % 5)).await,
                ));
            }
        });
        out.push_str(&format!("{:?} {:?}", store.keys(), store.stats()));
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..8 {
            let first = trace(seed);
            assert_eq!(first, trace(seed), "seed {seed} replays");
            distinct.insert(first);
        }
        assert!(distinct.len() > 1);
    }
}
