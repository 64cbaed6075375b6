//! E-mail: one message per delivery over SMTP, plain text plus HTML. The
//! `Message-ID` derives from the notification id, so a message sent twice
//! (a notifier killed after the server took it and before the outcome was
//! recorded) is recognisably the same message.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::delivery::{Channel, Job, Outcome, Sender, Target};

/// Sends e-mail through one SMTP server.
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of every `Message-ID`.
    id_domain: String,
}

impl EmailSender {
    /// `url`: `smtp://host:port` (plain), `smtp://host:port?tls=required`
    /// (STARTTLS) or `smtps://host:port`, with optional `user:password@`.
    pub fn new(url: &str, from: Mailbox, timeout: Duration) -> Result<Self, SmtpError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
            .timeout(Some(timeout))
            .build();
        let id_domain = from.email.domain().to_owned();
        Ok(EmailSender {
            transport,
            from,
            id_domain,
        })
    }

    /// The message for `job`, or why there can be none.
    pub fn message(&self, job: &Job) -> Result<Message, String> {
        let Target::Email {
            address,
            display_name,
        } = &job.target
        else {
            return Err("not an e-mail delivery".into());
        };
        let to = Mailbox::new(
            Some(display_name.clone()).filter(|n| !n.is_empty()),
            address
                .parse()
                .map_err(|e| format!("the user's address cannot be used: {e}"))?,
        );
        let n = &job.notification;
        let late = if n.late {
            "\n\n(This was sent late: the notifier was down or behind when it fell due.)"
        } else {
            ""
        };
        let text = format!("{}\n\n{}{late}\n", n.title, n.body);
        let html = format!(
            "<!doctype html>\n<html><body>\n<h2>{}</h2>\n<p>{}</p>{}\n</body></html>\n",
            escape_html(&n.title),
            escape_html(&n.body),
            if n.late {
                "\n<p><small>This was sent late: the notifier was down or behind when it fell due.</small></p>"
            } else {
                ""
            },
        );
        Message::builder()
            .message_id(Some(format!("<{}@{}>", n.id, self.id_domain)))
            .from(self.from.clone())
            .to(to)
            .subject(&n.title)
            .date(n.created_at.into())
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

impl Sender for EmailSender {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    async fn send(&self, job: &Job) -> Outcome {
        let message = match self.message(job) {
            Ok(m) => m,
            Err(reason) => {
                return Outcome::Failed {
                    status: None,
                    reason,
                    permanent: true,
                }
            }
        };
        match self.transport.send(message).await {
            Ok(response) => Outcome::Delivered {
                status: Some(i32::from(u16::from(response.code()))),
            },
            Err(e) => {
                let status = e.status().map(|c| i32::from(u16::from(c)));
                Outcome::Failed {
                    status,
                    // Only a refusal of this mailbox is given up on at
                    // once. Every other failure (the server down, a 4xx, a
                    // timeout, and the session-level 5xx a wrong password
                    // or sender setting gives) may pass once fixed, and is
                    // retried within the window.
                    permanent: e.is_permanent() && status.is_some_and(mailbox_refused),
                    reason: format!("smtp: {e}"),
                }
            }
        }
    }
}

/// Whether an SMTP reply refuses the recipient's mailbox itself (550 no
/// such user, 551 not local, 552 over quota, 553 name not allowed).
fn mailbox_refused(code: i32) -> bool {
    matches!(code, 550..=553)
}

/// Text made safe to put between HTML tags.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Notification;
    use uuid::Uuid;

    fn job(title: &str, address: &str) -> Job {
        Job {
            id: Uuid::from_u128(7),
            attempt: 1,
            notification: Notification {
                id: Uuid::from_u128(42),
                user_id: Uuid::from_u128(1),
                kind: "reminder".into(),
                task_id: None,
                project_id: None,
                title: title.into(),
                body: "body <b>".into(),
                data: serde_json::json!({}),
                late: true,
                created_at: chrono::Utc::now(),
            },
            target: Target::Email {
                address: address.into(),
                display_name: "Ada".into(),
            },
        }
    }

    fn sender() -> EmailSender {
        EmailSender::new(
            "smtp://127.0.0.1:1",
            "taskstream <notify@example.test>".parse().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    // The transport's connection pool needs a runtime, even unused.
    #[tokio::test]
    async fn the_message_id_derives_from_the_notification_and_html_is_escaped() {
        let m = sender()
            .message(&job("Reminder: <script>", "ada@example.test"))
            .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains(&format!(
            "Message-ID: <{}@example.test>",
            Uuid::from_u128(42)
        )));
        assert!(raw.contains("&lt;script&gt;"), "{raw}");
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
        assert!(raw.contains("sent late"));
    }

    #[tokio::test]
    async fn a_header_injection_in_the_title_stays_in_the_subject() {
        let m = sender()
            .message(&job("x\r\nBcc: evil@example.test", "ada@example.test"))
            .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let (headers, _) = raw.split_once("\r\n\r\n").unwrap();
        assert!(!headers.contains("\r\nBcc:"), "{headers}");
        assert!(headers.contains("Subject: =?utf-8?b?"), "{headers}");
    }

    #[tokio::test]
    async fn an_unusable_address_is_a_reason_not_a_panic() {
        assert!(sender().message(&job("t", "not an address")).is_err());
    }
}
