//! A minimal SMTP server inside the test process, so tests can read the mails the homeserver
//! sends.
//!
//! It speaks plain SMTP (no TLS, no authentication) on a free 127.0.0.1 port, accepts every
//! sender and recipient, and records each message. Start the homeserver pointed at it with
//! [`TestServer::start_with_mail`](crate::TestServer::start_with_mail).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long [`SmtpServer::next_mail_to`] waits for a mail.
const MAIL_TIMEOUT: Duration = Duration::from_secs(15);

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent after `DATA`: headers, a blank line and the body, with dot-stuffing
    /// removed and CRLF line ends.
    pub data: String,
}

impl ReceivedMail {
    /// Returns the value of the first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = self.data.split_once("\r\n\r\n")?;
        let mut value: Option<String> = None;
        for line in headers.split("\r\n") {
            if let Some(found) = &mut value {
                if line.starts_with([' ', '\t']) {
                    found.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((field, rest)) = line.split_once(':') {
                if field.eq_ignore_ascii_case(name) {
                    value = Some(rest.trim().to_owned());
                }
            }
        }
        value
    }

    /// Returns the `Subject` header.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// Returns the body as text, decoded from quoted-printable when the message uses it.
    ///
    /// Panics on a transfer encoding other than 7bit, 8bit or quoted-printable, which the
    /// plain ASCII mails of the homeserver never need.
    pub fn body(&self) -> String {
        let raw = self.data.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let encoding = self.header("Content-Transfer-Encoding").unwrap_or_default();
        match encoding.to_ascii_lowercase().as_str() {
            "" | "7bit" | "8bit" => raw.to_owned(),
            "quoted-printable" => decode_quoted_printable(raw),
            other => panic!("the test SMTP server cannot decode {other:?} bodies"),
        }
    }
}

#[derive(Default)]
struct Inbox {
    /// Every mail received, in order.
    all: Vec<ReceivedMail>,
    /// Mails not yet taken by [`SmtpServer::next_mail_to`].
    unread: Vec<ReceivedMail>,
}

/// A running SMTP listener. Dropping it stops accepting connections.
pub struct SmtpServer {
    port: u16,
    inbox: Arc<Mutex<Inbox>>,
    arrived: Arc<Notify>,
    accept_task: JoinHandle<()>,
}

impl SmtpServer {
    /// Starts the listener on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("failed to bind the test SMTP server on 127.0.0.1");
        let port = listener.local_addr().expect("failed to read the SMTP port").port();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let arrived = Arc::new(Notify::new());

        let accept_task = tokio::spawn({
            let inbox = inbox.clone();
            let arrived = arrived.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let inbox = inbox.clone();
                    let arrived = arrived.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve_session(stream, &inbox, &arrived).await {
                            eprintln!("test SMTP server: session ended with an error: {error}");
                        }
                    });
                }
            }
        });
        Self { port, inbox, arrived, accept_task }
    }

    /// Returns the port the listener accepts connections on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the `CADUCEUS__EMAIL__*` settings that make a homeserver send its mail here.
    pub fn server_env(&self) -> Vec<(String, String)> {
        vec![
            ("CADUCEUS__EMAIL__SMTP_HOST".to_owned(), "127.0.0.1".to_owned()),
            ("CADUCEUS__EMAIL__SMTP_PORT".to_owned(), self.port.to_string()),
            ("CADUCEUS__EMAIL__SECURITY".to_owned(), "none".to_owned()),
        ]
    }

    /// Returns every mail received so far, in order of arrival.
    pub fn all_mails(&self) -> Vec<ReceivedMail> {
        self.inbox.lock().unwrap().all.clone()
    }

    /// Returns how many mails to `address` (case-insensitive) arrived so far.
    pub fn count_to(&self, address: &str) -> usize {
        self.all_mails().iter().filter(|mail| is_recipient(mail, address)).count()
    }

    /// Waits for the oldest mail to `address` (case-insensitive) that no earlier call took,
    /// and takes it. Panics when none arrives within 15 seconds.
    pub async fn next_mail_to(&self, address: &str) -> ReceivedMail {
        let wait = async {
            loop {
                // Register interest before looking, so a mail that arrives in between wakes us.
                let notified = self.arrived.notified();
                {
                    let mut inbox = self.inbox.lock().unwrap();
                    if let Some(index) =
                        inbox.unread.iter().position(|mail| is_recipient(mail, address))
                    {
                        return inbox.unread.remove(index);
                    }
                }
                notified.await;
            }
        };
        tokio::time::timeout(MAIL_TIMEOUT, wait).await.unwrap_or_else(|_| {
            panic!(
                "no mail to {address} arrived within {} s; mails received: {:#?}",
                MAIL_TIMEOUT.as_secs(),
                self.all_mails()
            )
        })
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

fn is_recipient(mail: &ReceivedMail, address: &str) -> bool {
    mail.to.iter().any(|to| to.eq_ignore_ascii_case(address))
}

/// Runs one SMTP session: greeting, commands and any number of messages until `QUIT`.
async fn serve_session(
    stream: TcpStream,
    inbox: &Mutex<Inbox>,
    arrived: &Notify,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 127.0.0.1 ESMTP test server\r\n").await?;

    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-127.0.0.1\r\n250 8BITMIME\r\n",
            "HELO" => b"250 127.0.0.1\r\n",
            "MAIL" => {
                from = angle_address(command);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                to.push(angle_address(command));
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                let data = read_data(&mut lines).await?;
                let mail = ReceivedMail { from: from.clone(), to: to.clone(), data };
                {
                    let mut inbox = inbox.lock().unwrap();
                    inbox.all.push(mail.clone());
                    inbox.unread.push(mail);
                }
                arrived.notify_waiters();
                b"250 OK queued\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// Reads message lines up to the lone `.`, undoing dot-stuffing.
async fn read_data(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside DATA",
            ));
        }
        let content = line.trim_end_matches(['\r', '\n']);
        if content == "." {
            return Ok(data);
        }
        data.push_str(content.strip_prefix('.').unwrap_or(content));
        data.push_str("\r\n");
    }
}

/// Extracts `address` from `MAIL FROM:<address> ...` or `RCPT TO:<address>`.
fn angle_address(command: &str) -> String {
    let start = command.find('<').map_or(0, |index| index + 1);
    let end = command[start..].find('>').map_or(command.len(), |index| start + index);
    command[start..end].to_owned()
}

/// Decodes a quoted-printable body: soft line breaks (`=` at a line end) join lines and `=XX`
/// becomes the byte XX.
fn decode_quoted_printable(encoded: &str) -> String {
    let joined = encoded.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes.get(index + 1..index + 3).and_then(|pair| {
            std::str::from_utf8(pair).ok().and_then(|pair| u8::from_str_radix(pair, 16).ok())
        });
        match (bytes[index], hex) {
            (b'=', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
