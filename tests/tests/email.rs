//! The notifier's e-mail, end to end against a real SMTP server (Mailpit):
//! one message per notification, plain text and HTML, with a `Message-ID`
//! derived from the notification; per-kind opt-out; an SMTP server down for
//! a minute delays mail and loses none; a notifier killed before sending,
//! or after the server took a message and before the notifier heard so,
//! ends with each message in the mailbox once.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::mailpit::{HoldingSmtpRelay, Mailpit, OwnMailpit};
use tests::notify::{in_secs, Person, Team, WAIT};
use tests::process::metric;
use tests::{eventually, System};
use uuid::Uuid;

/// The e-mail delivery of notification `id` in `who`'s inbox, once it
/// reaches `state`.
async fn email_delivery(who: &Person, id: &str, state: &str) -> Value {
    eventually(
        &format!("the e-mail of {id} to be {state}"),
        Duration::from_secs(90),
        || async {
            let all = who.all().await;
            let n = all.iter().find(|n| n["id"] == id)?;
            let d = n["deliveries"]
                .as_array()?
                .iter()
                .find(|d| d["channel"] == "email")?
                .clone();
            (d["state"] == state).then_some(d)
        },
    )
    .await
}

/// Mailpit's `MessageID` (no angle brackets) for a notification.
fn message_id(notification: &str) -> String {
    format!("{notification}@taskstream.test")
}

async fn assign(by: &Person, to: &Person, project: Uuid, title: &str) -> Uuid {
    by.task(json!({ "title": title, "project_id": project, "assignee_ids": [to.id] }))
        .await
}

/// The sorted `MessageID`s of `found` (Mailpit summaries).
fn message_ids(found: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = found
        .iter()
        .map(|m| m["MessageID"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The sorted `MessageID`s notifications `ids` should have.
fn expected(ids: &[&str]) -> Vec<String> {
    let mut want: Vec<String> = ids.iter().map(|id| message_id(id)).collect();
    want.sort();
    want
}

fn id(n: &Value) -> &str {
    n["id"].as_str().expect("a notification id")
}

#[tokio::test]
async fn an_assignment_is_emailed_once_as_text_and_html_with_a_message_id_from_the_notification() {
    let t = Team::start().await;
    let mail = Mailpit::shared();
    let project = t.project().await;
    let added = t
        .bob
        .wait_for("project_member_added", project)
        .await
        .remove(0);
    let task = assign(&t.ann, &t.bob, project, "Review <the> \"spec\"").await;
    let n = t.bob.wait_for("assigned", task).await.remove(0);
    let id = n["id"].as_str().unwrap().to_owned();

    let found = mail.wait_for(&t.bob.email, 2, WAIT).await;
    assert_eq!(message_ids(&found), expected(&[&id, self::id(&added)]));
    let found: Vec<&Value> = found
        .iter()
        .filter(|m| m["MessageID"] == message_id(&id))
        .collect();
    assert_eq!(found[0]["Subject"], n["title"]);
    let whole = mail.message(found[0]["ID"].as_str().unwrap()).await;
    let text = whole["Text"].as_str().unwrap();
    let html = whole["HTML"].as_str().unwrap();
    assert!(text.contains(n["body"].as_str().unwrap()), "{text}");
    assert!(
        html.contains("Review &lt;the&gt; &quot;spec&quot;"),
        "{html}"
    );
    assert_eq!(whole["From"]["Address"], "notifications@taskstream.test");

    let d = email_delivery(&t.bob, &id, "delivered").await;
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["last_status"], 250, "{d}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
    assert!(d["delivered_at"].is_string(), "{d}");

    // Ann, who assigned it, gets nothing; nothing more comes for bob.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mail.to(&t.bob.email).await.len(), 2);
    assert!(mail.to(&t.ann.email).await.is_empty());
}

#[tokio::test]
async fn opting_out_of_a_kind_skips_its_email_visibly_and_keeps_the_others() {
    let t = Team::start().await;
    let mail = Mailpit::shared();
    t.bob
        .notifier
        .request(Method::PUT, "/me/notification-settings")
        .json(&json!({ "reminder_lead_times_seconds": [86400], "email_opt_out": ["assigned"] }))
        .await
        .expect(StatusCode::OK, "opt out of assignment e-mail");

    let project = t.project().await;
    let added = t
        .bob
        .wait_for("project_member_added", project)
        .await
        .remove(0);
    let task = assign(&t.ann, &t.bob, project, "quietly assigned").await;
    let assigned = t.bob.wait_for("assigned", task).await.remove(0);

    let found = mail.wait_for(&t.bob.email, 1, WAIT).await;
    assert_eq!(
        found[0]["MessageID"],
        message_id(added["id"].as_str().unwrap())
    );
    let skipped = email_delivery(&t.bob, assigned["id"].as_str().unwrap(), "skipped").await;
    assert!(
        skipped["last_error"]
            .as_str()
            .unwrap()
            .contains("opted out"),
        "{skipped}"
    );
    assert_eq!(skipped["attempts"], 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        mail.to(&t.bob.email).await.len(),
        1,
        "only the project e-mail"
    );
}

#[tokio::test]
async fn an_smtp_server_down_for_a_minute_delays_email_and_loses_none() {
    let mut smtp = OwnMailpit::start().await;
    let server = smtp.smtp;
    let sys = System::start_with_notifier(|c| {
        c.email.smtp_url = format!("smtp://{server}");
        c.email.timeout = Duration::from_secs(2);
    })
    .await;
    let t = Team::of(sys).await;
    smtp.stop().await;

    let project = t.project().await;
    let added = t
        .bob
        .wait_for("project_member_added", project)
        .await
        .remove(0);
    let mut ids = vec![id(&added).to_owned()];
    for i in 0..3 {
        let task = assign(&t.ann, &t.bob, project, &format!("while mail is down {i}")).await;
        let n = t.bob.wait_for("assigned", task).await.remove(0);
        ids.push(id(&n).to_owned());
    }
    // The failure is visible: pending, retried, with the reason.
    let waiting = eventually("a failed attempt recorded", WAIT, || async {
        let all = t.bob.all().await;
        let n = all.iter().find(|n| n["id"] == ids[0].as_str())?;
        let d = n["deliveries"][0].clone();
        (d["state"] == "pending" && d["attempts"].as_i64() >= Some(2)).then_some(d)
    })
    .await;
    assert!(
        waiting["last_error"].as_str().unwrap().contains("smtp"),
        "{waiting}"
    );
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");
    let metrics = reqwest::get(t.sys.notifier.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &metrics,
            "notifier_deliveries_total{channel=\"email\",outcome=\"retry\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );

    tokio::time::sleep(Duration::from_secs(60)).await;
    smtp.resume().await;
    let mail = smtp.client();
    let found = mail.wait_for(&t.bob.email, 4, WAIT).await;
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(message_ids(&found), expected(&want));
    for id in &ids {
        email_delivery(&t.bob, id, "delivered").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail.to(&t.bob.email).await.len(), 4, "each once");
}

#[tokio::test]
async fn a_notifier_killed_after_the_server_took_a_message_resends_it_and_the_mailbox_keeps_one() {
    // A mail store that recognises a resend by its Message-ID.
    let smtp = OwnMailpit::start_with(true).await;
    let relay = HoldingSmtpRelay::start(smtp.smtp).await;
    let mut sys = System::start().await;
    sys.stop_notifier().await;
    let mut config = sys
        .deployment
        .notifier_config(&sys.auth.url("/.well-known/jwks.json"));
    config.email.smtp_url = format!("smtp://{}", relay.addr);
    config.email.timeout = Duration::from_secs(2);
    let mut notifier = sys.deployment.spawn_notifier_process_with(config).await;
    let t = Team::with_notifier_at(sys, &notifier.url("")).await;

    let project = t.ann.project("sent, unheard").await;
    t.ann.add(project, &t.bob, "member").await;
    let n = t
        .bob
        .wait_for("project_member_added", project)
        .await
        .remove(0);
    let id = n["id"].as_str().unwrap().to_owned();
    let mail = smtp.client();
    // The server has it; the notifier is still waiting for its answer.
    mail.wait_for(&t.bob.email, 1, WAIT).await;
    assert!(relay.held.load(std::sync::atomic::Ordering::SeqCst));
    let sending = email_delivery(&t.bob, &id, "sending").await;
    assert_eq!(sending["attempts"], 1);
    notifier.kill9();
    notifier.restart().await;

    // Sent again once the lease is over, with the same Message-ID.
    let d = email_delivery(&t.bob, &id, "delivered").await;
    assert_eq!(d["attempts"], 2, "{d}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let found = mail.to(&t.bob.email).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["MessageID"], message_id(&id));
    assert_eq!(
        t.bob.about("project_member_added", project).await.len(),
        1,
        "one inbox entry"
    );
}

#[tokio::test]
async fn a_notifier_killed_between_scheduling_and_sending_sends_each_once_after_restart() {
    let mut smtp = OwnMailpit::start().await;
    let server = smtp.smtp;
    smtp.stop().await;
    let mut sys = System::start().await;
    sys.stop_notifier().await;
    let mut config = sys
        .deployment
        .notifier_config(&sys.auth.url("/.well-known/jwks.json"));
    config.email.smtp_url = format!("smtp://{server}");
    config.email.timeout = Duration::from_secs(2);
    let mut notifier = sys.deployment.spawn_notifier_process_with(config).await;
    let t = Team::with_notifier_at(sys, &notifier.url("")).await;
    t.bob.set_leads(&[2]).await;

    // A reminder and an overdue notice fall due; their e-mail cannot leave.
    let task = t
        .bob
        .task(json!({ "title": "due while mail is down", "due_at": in_secs(4) }))
        .await;
    let overdue = t.bob.wait_for("overdue", task).await.remove(0);
    let reminder = t.bob.about("reminder", task).await.remove(0);
    notifier.kill9();
    smtp.resume().await;
    notifier.restart().await;

    let mail = smtp.client();
    let found = mail.wait_for(&t.bob.email, 2, WAIT).await;
    assert_eq!(
        message_ids(&found),
        expected(&[id(&overdue), id(&reminder)])
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mail.to(&t.bob.email).await.len(), 2);
    assert_eq!(t.bob.about("reminder", task).await.len(), 1);
    assert_eq!(t.bob.about("overdue", task).await.len(), 1);
}
