//! Every write records a deterministic operation; replaying the recorded operations on a
//! fresh keyspace must reproduce the same state. This is the property the Raft log relies
//! on: a replica applying the leader's operations ends up identical to the leader.

use bytes::Bytes;
use proptest::prelude::*;
use redoubt_server::keyspace::Op;
use redoubt_server::{replay, Config, Shared};

fn op(db: usize, now_ms: i64, words: &[String]) -> Op {
    Op { db, now_ms, argv: words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect() }
}

/// Commands whose effects depend on time or randomness, plus plain ones.
fn command() -> impl Strategy<Value = Vec<String>> {
    let key = prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(String::from);
    let val = prop::sample::select(vec!["1", "2", "x", "10", "-3", "yy"]).prop_map(String::from);
    (key.clone(), key, val.clone(), val, 0u8..40).prop_map(|(k, k2, v, v2, which)| {
        let w: Vec<&str> = match which {
            0 => vec!["SET", &k, &v],
            1 => vec!["SET", &k, &v, "EX", "100"],
            2 => vec!["SET", &k, &v, "PX", "5"],
            3 => vec!["INCR", &k],
            4 => vec!["INCRBYFLOAT", &k, "1.5"],
            5 => vec!["APPEND", &k, &v],
            6 => vec!["EXPIRE", &k, "1"],
            7 => vec!["PEXPIRE", &k, "3"],
            8 => vec!["PERSIST", &k],
            9 => vec!["DEL", &k],
            10 => vec!["RENAME", &k, &k2],
            11 => vec!["COPY", &k, &k2],
            12 => vec!["GETEX", &k, "PX", "7"],
            13 => vec!["GETDEL", &k],
            14 => vec!["SETRANGE", &k, "2", &v],
            15 => vec!["LPUSH", &k, &v, &v2],
            16 => vec!["RPOP", &k],
            17 => vec!["LMOVE", &k, &k2, "LEFT", "RIGHT"],
            18 => vec!["SADD", &k, &v, &v2],
            19 => vec!["SPOP", &k],
            20 => vec!["SPOP", &k, "2"],
            21 => vec!["SMOVE", &k, &k2, &v],
            22 => vec!["HSET", &k, &v, &v2],
            23 => vec!["HINCRBY", &k, &v, "2"],
            24 => vec!["HINCRBYFLOAT", &k, &v, "0.5"],
            25 => vec!["ZADD", &k, "1", &v],
            26 => vec!["ZINCRBY", &k, "2", &v],
            27 => vec!["ZPOPMIN", &k],
            28 => vec!["SETBIT", &k, "7", "1"],
            29 => vec!["GET", &k],
            30 => vec!["SUNIONSTORE", &k, &k, &k2],
            31 => vec!["ZUNIONSTORE", &k, "2", &k, &k2],
            32 => vec!["MSET", &k, &v, &k2, &v2],
            33 => vec!["SETEX", &k, "1", &v],
            34 => vec!["MOVE", &k, "1"],
            35 => vec!["LTRIM", &k, "0", "0"],
            36 => vec!["HDEL", &k, &v],
            37 => vec!["SREM", &k, &v],
            38 => vec!["EXPIREAT", &k, "1"],
            _ => vec!["SORT", &k, "ALPHA", "STORE", &k2],
        };
        w.into_iter().map(String::from).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replaying_recorded_effects_reproduces_the_state(
        cmds in prop::collection::vec((command(), 0i64..4), 1..60)
    ) {
        let leader = Shared::new(Config::default());
        let follower = Shared::new(Config::default());
        let mut now = 1_700_000_000_000i64;
        {
            let mut st = leader.state.lock();
            st.ks.effects = Some(Vec::new());
        }
        for (words, step) in &cmds {
            now += step;
            let mut st = leader.state.lock();
            let _ = replay::apply(&leader, &mut st, &op(0, now, words));
            // Active expiry is part of the leader's history too.
            st.ks.now_ms = now;
            st.ks.active_expire(0, 100);
        }
        let effects = leader.state.lock().ks.effects.take().unwrap();
        {
            let mut st = follower.state.lock();
            for e in &effects {
                replay::apply(&follower, &mut st, e).expect("recorded ops are valid commands");
            }
        }
        // Compare the logical state at the final time: keys that are already expired on one
        // side but not yet reaped on the other are equivalent.
        let live = |s: &Shared| {
            let st = s.state.lock();
            replay::fingerprint(&st).into_iter().filter(|(_, _, _, at)| *at == 0 || *at > now).collect::<Vec<_>>()
        };
        prop_assert_eq!(live(&leader), live(&follower), "effects: {:?}", effects);
    }
}

/// A fixed history touching time and randomness, so the property above cannot pass
/// vacuously: the replayed state must be non-empty and equal.
#[test]
fn spop_and_ttl_replay_exactly() {
    let leader = Shared::new(Config::default());
    let follower = Shared::new(Config::default());
    leader.state.lock().ks.effects = Some(Vec::new());
    let now = 1_700_000_000_000i64;
    let script: &[&[&str]] = &[
        &["SADD", "s", "a", "b", "c", "d", "e"],
        &["SPOP", "s", "2"],
        &["SET", "k", "v", "EX", "100"],
        &["EXPIRE", "s", "50"],
        &["INCRBYFLOAT", "f", "0.1"],
        &["LPUSH", "l", "1", "2", "3"],
        &["LMOVE", "l", "l2", "LEFT", "RIGHT"],
    ];
    for (i, words) in script.iter().enumerate() {
        let words: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let mut st = leader.state.lock();
        replay::apply(&leader, &mut st, &op(0, now + i as i64, &words)).unwrap();
    }
    let effects = leader.state.lock().ks.effects.take().unwrap();
    assert!(effects.iter().any(|o| o.argv[0].as_ref() == b"SREM"), "SPOP must record SREM: {effects:?}");
    assert!(effects.iter().any(|o| o.argv[0].as_ref() == b"PEXPIREAT"), "{effects:?}");
    let mut st = follower.state.lock();
    for e in &effects {
        replay::apply(&follower, &mut st, e).unwrap();
    }
    drop(st);
    let a = replay::fingerprint(&leader.state.lock());
    let b = replay::fingerprint(&follower.state.lock());
    assert_eq!(a.len(), 5, "{a:?}");
    assert_eq!(a, b);
}
