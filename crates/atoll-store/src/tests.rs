use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn keys(page: &ListPage) -> Vec<String> {
    page.items.iter().map(|(k, _)| k.to_string()).collect()
}

#[tokio::test]
async fn revisions_are_global_and_cas_is_checked() {
    let store = Store::memory();
    let a = store.create("/a/1", b("x")).await.unwrap();
    let c = store.create("/b/1", b("y")).await.unwrap();
    assert_eq!((a.revision, c.revision), (1, 2));
    assert!(matches!(
        store.create("/a/1", b("again")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let u = store
        .update("/a/1", b("x2"), Precondition::ModRevision(1))
        .await
        .unwrap();
    assert_eq!(u.kind, EventKind::Modified);
    assert_eq!(u.create_revision, 1);
    match store
        .update("/a/1", b("stale"), Precondition::ModRevision(1))
        .await
    {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (1, 3)),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert!(matches!(
        store.delete("/nope", Precondition::None).await,
        Err(StoreError::NotFound(_))
    ));
    let d = store.delete("/a/1", Precondition::None).await.unwrap();
    assert_eq!(d.value, b("x2"));
    assert_eq!(store.revision(), 4);
    assert!(store.get("/a/1").is_none());
}

#[tokio::test]
async fn list_pages_and_reads_the_past() {
    let store = Store::memory();
    for i in 0..5 {
        store.create(&format!("/p/{i}"), b("v0")).await.unwrap();
    }
    store.create("/q/0", b("other prefix")).await.unwrap();
    let at = store.revision();
    store
        .update("/p/1", b("v1"), Precondition::None)
        .await
        .unwrap();
    store.delete("/p/2", Precondition::None).await.unwrap();
    store.create("/p/9", b("new")).await.unwrap();

    let now = store.list("/p/", None, 0, None).unwrap();
    assert_eq!(keys(&now), ["/p/0", "/p/1", "/p/3", "/p/4", "/p/9"]);

    let past = store.list("/p/", None, 0, Some(at)).unwrap();
    assert_eq!(keys(&past), ["/p/0", "/p/1", "/p/2", "/p/3", "/p/4"]);
    assert_eq!(past.items[1].1.value, b("v0"));

    let first = store.list("/p/", None, 2, Some(at)).unwrap();
    assert!(first.more);
    let second = store
        .list("/p/", Some(&first.items[1].0), 2, Some(first.revision))
        .unwrap();
    assert_eq!(keys(&second), ["/p/2", "/p/3"]);
    let third = store
        .list("/p/", Some(&second.items[1].0), 2, Some(at))
        .unwrap();
    assert_eq!(keys(&third), ["/p/4"]);
    assert!(!third.more);
}

#[tokio::test]
async fn watch_from_a_revision_and_gone_past_the_window() {
    let store = Store::open(
        BackendKind::Memory,
        Options {
            max_log_events: 4,
            ..Options::default()
        },
    )
    .unwrap();
    let mut w = store.watch("/w/", 0).unwrap();
    store.create("/w/a", b("1")).await.unwrap();
    store.create("/x/a", b("unwatched")).await.unwrap();
    store
        .update("/w/a", b("2"), Precondition::None)
        .await
        .unwrap();
    let got = w.next_batch().await.unwrap();
    let kinds: Vec<_> = got.iter().map(|e| (e.revision, e.kind)).collect();
    assert_eq!(
        kinds,
        [(1, EventKind::Added), (3, EventKind::Modified)],
        "only the prefix, in revision order"
    );
    for i in 0..10 {
        store.create(&format!("/w/{i}"), b("x")).await.unwrap();
    }
    assert!(matches!(
        store.watch("/w/", 1),
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        w.next_batch().await,
        Err(StoreError::Compacted { .. })
    ));
    // A watch from the head sees only what follows.
    let mut fresh = store.watch("/w/", store.revision()).unwrap();
    store.delete("/w/a", Precondition::None).await.unwrap();
    let got = fresh.next_batch().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, EventKind::Deleted);
    assert_eq!(got[0].value, b("2"));
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_redb(&dir.path().join("db")).unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                s.create(&format!("/c/{t}-{i}"), b("v")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.revision(), 320);
    assert_eq!(store.list("/c/", None, 0, None).unwrap().items.len(), 320);
}

#[tokio::test]
async fn redb_survives_reopen_with_revisions_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (rev_a, rev_b);
    {
        let store = Store::open_redb(&path).unwrap();
        rev_a = store.create("/r/a", b("a")).await.unwrap().revision;
        store.create("/r/b", b("b0")).await.unwrap();
        rev_b = store
            .update("/r/b", b("b1"), Precondition::None)
            .await
            .unwrap()
            .revision;
        store.create("/r/c", b("c")).await.unwrap();
        store.delete("/r/c", Precondition::None).await.unwrap();
    }
    // The writer thread holds the database until its channel closes; give it a moment.
    let store = loop {
        match Store::open_redb(&path) {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(store.revision(), 5);
    assert_eq!(store.get("/r/a").unwrap().mod_revision, rev_a);
    let b_entry = store.get("/r/b").unwrap();
    assert_eq!((b_entry.mod_revision, b_entry.value), (rev_b, b("b1")));
    assert!(store.get("/r/c").is_none());
    // Watches resume from a revision before the restart.
    let mut w = store.watch("/r/", rev_a).unwrap();
    let got = w.next_batch().await.unwrap();
    assert_eq!(got.len(), 4);
    // The past is readable where the log still knows the previous values.
    let past = store.list("/r/", None, 0, Some(4)).unwrap();
    assert_eq!(keys(&past), ["/r/a", "/r/b", "/r/c"]);
    // New writes continue the revision sequence.
    assert_eq!(store.create("/r/d", b("d")).await.unwrap().revision, 6);
}

#[tokio::test]
async fn a_key_watch_sees_its_key_alone_and_watches_wake_only_for_theirs() {
    let store = Store::memory();
    let mut one = store.watch_key("/csr/a", 0).unwrap();
    let mut all = store.watch("/csr/", 0).unwrap();
    let mut odd = store.watch("/csr/a", 0).unwrap();
    store.create("/csr/ab", b("other")).await.unwrap();
    store.create("/csr/a", b("1")).await.unwrap();
    let got = one.next_batch().await.unwrap();
    assert_eq!(got.len(), 1, "not /csr/ab, which only starts with the key");
    assert_eq!(&*got[0].key, "/csr/a");
    assert_eq!(all.next_batch().await.unwrap().len(), 2);
    assert_eq!(
        odd.next_batch().await.unwrap().len(),
        2,
        "a prefix is a prefix"
    );
    // Waiting watches, many writes that are not theirs, then one that is: each sees exactly
    // its own, with nothing missed.
    let waiting = tokio::spawn(async move {
        let got = one.next_batch().await.unwrap();
        (got, one)
    });
    tokio::task::yield_now().await;
    for i in 0..500 {
        store.create(&format!("/other/{i}"), b("x")).await.unwrap();
    }
    store
        .update("/csr/a", b("2"), Precondition::None)
        .await
        .unwrap();
    let (got, mut one) = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b("2"));
    assert_eq!(got[0].revision, store.revision());
    let got = all.next_batch().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].revision, store.revision());
    // Dropping watches unregisters them.
    drop(all);
    drop(odd);
    store.delete("/csr/a", Precondition::None).await.unwrap();
    assert_eq!(one.next_batch().await.unwrap()[0].kind, EventKind::Deleted);
    drop(one);
    assert!(store.watchers().is_empty());
}
