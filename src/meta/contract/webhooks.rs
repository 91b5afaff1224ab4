//! Contract cases of webhooks and their outbox: deliveries are written by the change they
//! describe (and only when it happens), each webhook's go out oldest first, the log is bounded,
//! and a shared store gives each due delivery to one claimant.

use super::{file, inst, right, stored};
use crate::error::Error;
use crate::meta::webhooks::{
    stage, Attempt, Delivery, DeliveryStatus, Subject, Webhook, WebhookEvent,
};
use crate::meta::MetaStore;
use crate::types::{AccountId, DeliveryId, EventId, InstanceId, WebhookId};

fn webhook(instance: InstanceId) -> Webhook {
    Webhook {
        id: WebhookId::new(),
        instance,
        domain: "a.test".into(),
        url: "https://example.com/hook".into(),
        secret: "whsec_0123456789abcdef".into(),
        events: WebhookEvent::ALL.to_vec(),
        created_by: AccountId("root".into()),
        created: 1,
    }
}

fn delivery(hook: &Webhook, subject: Subject) -> Delivery {
    Delivery {
        id: DeliveryId::new(),
        webhook: hook.id,
        event_id: EventId::new(),
        event: WebhookEvent::FileCreated,
        time: 1,
        actor: AccountId("alice".into()),
        subject,
        status: DeliveryStatus::Pending,
        created: 1,
        next_attempt: 1,
        attempt_count: 0,
        attempts: vec![],
    }
}

/// Each webhook's oldest due delivery (ids), claimed for a minute.
fn due(m: &dyn MetaStore, now: u64) -> Vec<DeliveryId> {
    let mut ids: Vec<DeliveryId> = m
        .due_deliveries(now, 100, 60_000)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn done(mut d: Delivery, status: DeliveryStatus, keep: usize, m: &dyn MetaStore) -> Delivery {
    d.status = status;
    d.push_attempt(Attempt {
        at: 5,
        status: Some(200),
        latency_ms: 3,
        error: None,
    });
    m.record_attempt(&d, keep).unwrap();
    d
}

/// A change writes the deliveries staged for it, in its own transaction: a change that fails
/// or changes nothing writes none, and a re-upload's delivery carries the record it wrote.
pub fn outbox_is_written_with_the_change(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let hook = webhook(i);
    m.create_webhook(&hook, 20).unwrap();
    let f = file(i, "alice", "/", "a.txt", 1);
    {
        let _s = stage(vec![delivery(&hook, Subject::File(f.clone()))]);
        m.insert_files(&[(f.clone(), None)]).unwrap();
    }
    let log = m.deliveries(hook.id, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].subject, Subject::File(f.clone()));

    // A failed change (the file is missing) writes nothing.
    let ghost = file(i, "alice", "/", "ghost.txt", 1);
    {
        let _s = stage(vec![delivery(&hook, Subject::File(ghost.clone()))]);
        assert!(m.update_file(&ghost).is_err());
    }
    // Neither does a revoke of a grant that is not there.
    {
        let r = right(i, "alice", false, &f.id.to_string(), &["bob"]);
        let _s = stage(vec![delivery(&hook, Subject::Right(r.clone()))]);
        assert!(!m.delete_right(r.id).unwrap());
    }
    assert_eq!(m.deliveries(hook.id, 10).unwrap().len(), 1);

    // A re-upload's delivery is filled with the new record.
    {
        let _s = stage(vec![delivery(&hook, Subject::Written)]);
        let (new, _, _) = m
            .replace_content(f.id, &stored(2), false, 9)
            .unwrap()
            .unwrap();
        let log = m.deliveries(hook.id, 10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].subject, Subject::File(new));
    }
    // Nothing staged: nothing written (the guard cleared what was staged).
    m.delete_file(f.id).unwrap();
    assert_eq!(m.deliveries(hook.id, 10).unwrap().len(), 2);
}

/// Deliveries of a webhook go oldest first: the next is due only once the one before it is
/// finished, a retry waits for its time, and finished ones are trimmed to the newest `keep`.
pub fn deliveries_go_in_order_and_are_logged(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let (a, b) = (webhook(i), webhook(i));
    m.create_webhook(&a, 20).unwrap();
    m.create_webhook(&b, 20).unwrap();
    let f = file(i, "alice", "/", "a.txt", 1);
    let a1 = delivery(&a, Subject::File(f.clone()));
    let a2 = delivery(&a, Subject::File(f.clone()));
    let a3 = delivery(&a, Subject::File(f.clone()));
    let b1 = delivery(&b, Subject::File(f.clone()));
    m.enqueue(&[a1.clone(), a2.clone(), b1.clone()]).unwrap();
    m.enqueue(std::slice::from_ref(&a3)).unwrap();
    let mut want = vec![a1.id, b1.id];
    want.sort_unstable();
    assert_eq!(due(m, 10), want);

    // a1 fails: retried at 100, and a2 waits behind it.
    let mut retry = a1.clone();
    retry.next_attempt = 100;
    m.record_attempt(&retry, 10).unwrap();
    done(b1.clone(), DeliveryStatus::Delivered, 10, m);
    assert!(due(m, 50).is_empty());
    assert_eq!(due(m, 100), vec![a1.id]);
    done(a1.clone(), DeliveryStatus::Failed, 10, m);
    assert_eq!(due(m, 100), vec![a2.id]);
    done(a2.clone(), DeliveryStatus::Delivered, 1, m);
    // keep = 1: a1 (finished, older) is trimmed; a2 stays; a3 (pending) stays.
    let log: Vec<DeliveryId> = m
        .deliveries(a.id, 10)
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(log, vec![a3.id, a2.id]);
    assert!(m.delivery(a.id, a1.id).unwrap().is_none());
    let got = m.delivery(a.id, a2.id).unwrap().unwrap();
    assert_eq!(got.status, DeliveryStatus::Delivered);
    assert_eq!((got.attempt_count, got.attempts.len()), (1, 1));
    assert_eq!(due(m, 100), vec![a3.id]);
    // Another webhook's delivery is not found through this one.
    assert!(m.delivery(b.id, a3.id).unwrap().is_none());
}

/// At most `max_per_instance` webhooks per instance; listed per instance; deleting one takes
/// its outbox with it.
pub fn webhook_cap_and_delete(m: &dyn MetaStore) {
    let i = inst(m, "a.test");
    let j = inst(m, "b.test");
    let mut hooks: Vec<Webhook> = (0..3).map(|_| webhook(i)).collect();
    for h in &hooks {
        m.create_webhook(h, 3).unwrap();
    }
    let e = m.create_webhook(&webhook(i), 3).unwrap_err();
    assert!(matches!(e, Error::TooManyRequests(_)), "{e:?}");
    m.create_webhook(&webhook(j), 3).unwrap();
    hooks.sort_by_key(|h| h.id);
    assert_eq!(m.webhooks_of(i).unwrap(), hooks);
    assert_eq!(m.webhooks_of(j).unwrap().len(), 1);
    assert_eq!(m.webhook(hooks[0].id).unwrap().as_ref(), Some(&hooks[0]));
    let f = file(i, "alice", "/", "a.txt", 1);
    m.enqueue(&[delivery(&hooks[0], Subject::File(f))]).unwrap();
    assert!(m.delete_webhook(hooks[0].id).unwrap());
    assert!(!m.delete_webhook(hooks[0].id).unwrap());
    assert!(m.webhook(hooks[0].id).unwrap().is_none());
    assert!(m.deliveries(hooks[0].id, 10).unwrap().is_empty());
    assert!(due(m, 10).is_empty());
    assert_eq!(m.webhooks_of(i).unwrap().len(), 2);
}

/// On a store shared by several nodes, a due delivery is claimed once: a second claimant
/// finds nothing until the first records its attempt or its lease runs out.
pub fn due_deliveries_are_claimed_once_when_shared(m: &dyn MetaStore) {
    if !m.shared() {
        return;
    }
    let i = inst(m, "a.test");
    let hook = webhook(i);
    m.create_webhook(&hook, 20).unwrap();
    let d = delivery(&hook, Subject::File(file(i, "alice", "/", "a.txt", 1)));
    m.enqueue(std::slice::from_ref(&d)).unwrap();
    let claims: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| m.due_deliveries(10, 10, 1_000).unwrap().len()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(claims.iter().sum::<usize>(), 1, "{claims:?}");
    // The lease runs out at 1010: then it is due again.
    assert!(due(m, 500).is_empty());
    assert_eq!(due(m, 1_010), vec![d.id]);
}
