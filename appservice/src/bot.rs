//! The verification bot: greets new accounts, checks registration numbers, hands ambiguous
//! cases to officers and re-checks what it granted.
//!
//! One task runs everything the bot does, one step at a time: events from the inbox, the look
//! at new accounts, the passes over all accounts and the re-checks. So no two steps race on the
//! state or on one person's verification. Every step is safe to repeat: an event whose
//! handling was cut short by a crash is handled again after the restart, which at worst sends
//! one reply twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use caduceus_config::appservice::AppserviceConfig;
use ruma::serde::Raw;
use ruma::{OwnedDeviceId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::commands::{parse_officer_command, parse_user_message, OfficerCommand, UserRequest};
use crate::crypto::{BotCrypto, Decrypted, ReceivedRoomKey};
use crate::homeserver::{Evidence, Homeserver, HsError, UserRecord, Verification};
use crate::matching::{compare, Outcome};
use crate::messages;
use crate::registers::{RegisterEntry, Registers};
use crate::rosters::{trusted_domain, Rosters};
use crate::state::{AwaitingKey, Grant, ReviewCase, Store};

/// Failed attempts after which an event is given up.
const MAX_ATTEMPTS: u32 = 8;

/// How many accounts one request to the account list returns.
const USERS_PAGE: u32 = 100;

/// How long an encrypted message may wait for its room key before the bot requests that its
/// sender send it again.
const KEY_WAIT: Duration = Duration::from_secs(10 * 60);

/// The folder of the bot's crypto store, inside the data dir.
const CRYPTO_DIR: &str = "crypto";

/// Whether an encrypted message was dealt with or waits for its room key.
enum KeyWait {
    Done,
    /// Waiting for the Megolm session named here, when the event names one.
    Waiting(Option<String>),
}

/// The bot and everything it works with.
pub struct Bot {
    config: AppserviceConfig,
    hs: Homeserver,
    store: Arc<Store>,
    registers: Registers,
    rosters: Rosters,
    /// The bot's own device for encrypted rooms, once it has logged in and opened its store.
    crypto: Option<BotCrypto>,
    /// The task that syncs the bot's device for to-device messages.
    crypto_sync: Option<JoinHandle<()>>,
    /// Whether each room the bot has sent to is encrypted.
    encrypted_rooms: HashMap<String, bool>,
}

impl Drop for Bot {
    fn drop(&mut self) {
        if let Some(task) = self.crypto_sync.take() {
            task.abort();
        }
    }
}

impl Bot {
    pub fn new(config: AppserviceConfig, hs: Homeserver, store: Arc<Store>) -> Self {
        let registers = Registers::new(&config.registers);
        let rosters = Rosters::new(&config.rosters);
        Self {
            config,
            hs,
            store,
            registers,
            rosters,
            crypto: None,
            crypto_sync: None,
            encrypted_rooms: HashMap::new(),
        }
    }

    fn bot_user_id(&self) -> &str {
        self.hs.bot_user_id()
    }

    fn register_names(&self) -> Vec<&str> {
        self.registers.names()
    }

    /// Runs the bot until `shutdown` is notified.
    pub async fn run(mut self, inbox_ready: Arc<Notify>, shutdown: Arc<Notify>) {
        self.registers.refresh();
        self.rosters.refresh();
        self.start_up(&shutdown).await;
        let mut room_keys = self.crypto.as_ref().map(BotCrypto::subscribe_room_keys);
        // Keys that arrived while the bot was stopped are in the store already.
        self.retry_awaiting_keys(None).await;

        let every = |secs: u64| {
            let mut timer = interval(Duration::from_secs(secs));
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
            timer
        };
        let mut users_timer = every(self.config.bot.users_poll_interval_secs);
        let mut scan_timer = every(self.config.bot.full_scan_interval_secs);
        let mut recheck_timer = every(self.config.bot.recheck_interval_secs);
        // The first re-check waits a whole interval; the first scan runs at once.
        recheck_timer.reset();
        let mut retry_at: Option<Instant> = None;

        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let room_key = async {
                match room_keys.as_mut() {
                    Some(receiver) => receiver.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.notified() => return,
                () = inbox_ready.notified(), if retry_at.is_none() => {}
                () = retry => retry_at = None,
                key = room_key => match key {
                    // The sender lives in `BotCrypto`, which the bot keeps, so this is not expected.
                    Err(RecvError::Closed) => room_keys = None,
                    key => self.room_key_arrived(key).await,
                },
                _ = users_timer.tick() => {
                    self.retry_awaiting_keys(None).await;
                    if self.rosters.refresh() {
                        self.scan_accounts(true).await;
                    }
                    self.scan_accounts(false).await;
                }
                _ = scan_timer.tick() => {
                    self.rosters.refresh();
                    self.scan_accounts(true).await;
                }
                _ = recheck_timer.tick() => self.recheck().await,
            }
            if retry_at.is_none() && !self.process_inbox().await {
                retry_at = Some(Instant::now() + Duration::from_secs(3));
            }
        }
    }

    /// Sets the bot's display name, logs in for a device and prepares the officers' room,
    /// retrying until the homeserver responds.
    async fn start_up(&mut self, shutdown: &Notify) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.try_start_up().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot prepare the bot yet; trying again");
                }
            }
            tokio::select! {
                () = shutdown.notified() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    async fn try_start_up(&mut self) -> Result<(), HsError> {
        match self.hs.set_display_name(&self.config.bot.display_name).await {
            Ok(()) => {}
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => tracing::warn!(%error, "cannot set the bot's display name"),
        }
        match self.start_encryption().await {
            Ok(()) => {}
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => {
                tracing::error!(%error, "the bot cannot use end-to-end encryption; it opens unencrypted chats");
            }
        }
        match self.prepare_officers_room().await {
            Err(error) if error.is_transient() => Err(error),
            // An officer account that does not exist yet must not keep the bot from starting.
            // The room is made when that account appears or when the first case needs it.
            Err(error) => {
                tracing::warn!(%error, "cannot prepare the officers' room");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Logs the bot in on its own device, opens the device's crypto store and starts the
    /// device's sync. Does nothing when encryption is running already.
    async fn start_encryption(&mut self) -> Result<(), HsError> {
        if self.crypto.is_some() {
            return Ok(());
        }

        let store_dir = self.config.service.data_dir.join(CRYPTO_DIR);
        // A device whose keys were lost must not be used again: others still hold its old
        // public keys and would encrypt for keys the bot no longer has.
        let saved_device = self
            .store
            .read(|state| state.device_id.clone())
            .filter(|_| store_dir.join("matrix-sdk-crypto.sqlite3").exists());

        // Logging in with the saved device ID keeps the device and its keys and replaces the
        // access token of the previous run.
        let (access_token, device_id) = self.hs.login(saved_device.as_deref()).await?;
        if access_token.is_empty() || device_id.is_empty() {
            tracing::error!("the bot's login returned no access token or device ID");
            return Ok(());
        }
        self.save(|state| state.device_id = Some(device_id.clone()));

        let Ok(user_id) = UserId::parse(self.bot_user_id()) else {
            tracing::error!(user_id = %self.bot_user_id(), "the bot's user ID is invalid");
            return Ok(());
        };
        let device_id = OwnedDeviceId::from(device_id);
        let crypto = BotCrypto::open(
            &self.config.homeserver.url,
            &user_id,
            &device_id,
            &access_token,
            &store_dir,
        )
        .await?;
        tracing::info!(%device_id, "the bot's device is ready for encrypted rooms");

        let syncing = crypto.clone();
        self.crypto_sync = Some(tokio::spawn(async move {
            let Err(error) = syncing.run_sync().await;
            tracing::error!(%error, "the bot's device stopped syncing; restart the gatekeeper");
        }));
        self.crypto = Some(crypto);
        Ok(())
    }

    async fn prepare_officers_room(&mut self) -> Result<(), HsError> {
        let configured = self.config.officers.room.clone();
        if !configured.is_empty() {
            if let Err(error) = self.hs.join(&configured).await {
                if error.is_transient() {
                    return Err(error);
                }
                tracing::warn!(room_id = %configured, %error, "cannot join the officers' room; invite the bot to it");
            }
            self.save(|state| state.officers_room = Some(configured));
            return Ok(());
        }
        let existing = self.store.read(|state| state.officers_room.clone());
        if existing.is_some() {
            return Ok(());
        }
        if self.config.officers.users.is_empty() {
            tracing::warn!("no officers are configured: ambiguous cases wait until some are");
            return Ok(());
        }
        let room_id = self
            .hs
            .create_room(
                &self.config.officers.users,
                false,
                self.crypto.is_some(),
                Some("Verification officers"),
            )
            .await?;
        self.encrypted_rooms.insert(room_id.clone(), self.crypto.is_some());
        tracing::info!(%room_id, "created the officers' room");
        self.save(|state| state.officers_room = Some(room_id));
        Ok(())
    }

    /// Makes sure an officer's account is in the officers' room: creates the room if it could
    /// not be made before, because an officer's account did not exist yet, or invites the
    /// officer to it. A failed attempt is repeated at the next pass over all accounts.
    async fn bring_officer_in(&mut self, officer: &str) {
        let result = match self.store.read(|state| state.officers_room.clone()) {
            None => self.prepare_officers_room().await,
            Some(room_id) => match self.hs.joined_and_invited(&room_id).await {
                Ok(members) if members.iter().any(|member| member == officer) => Ok(()),
                Ok(_) => self.hs.invite(&room_id, officer).await,
                Err(error) => Err(error),
            },
        };
        if let Err(error) = result {
            tracing::warn!(%officer, %error, "cannot bring an officer into the officers' room");
        }
    }

    /// Applies a change to the durable state. A failed write is logged; the change is then
    /// lost on restart, and the step that made it is repeated.
    fn save(&self, change: impl FnOnce(&mut crate::state::State)) {
        if let Err(error) = self.store.update(change) {
            tracing::error!(%error, "cannot write the gatekeeper's state");
        }
    }

    /// Sends a notice to a room, encrypted when the room is.
    async fn send(&mut self, room_id: &str, text: &str) -> Result<(), HsError> {
        let content = json!({ "msgtype": "m.notice", "body": text });
        let Some(crypto) = self.crypto.clone() else {
            self.hs.send_event(room_id, "m.room.message", &content).await?;
            return Ok(());
        };
        let encrypted = match self.encrypted_rooms.get(room_id) {
            Some(encrypted) => *encrypted,
            None => {
                let encrypted = self.hs.is_encrypted(room_id).await?;
                self.encrypted_rooms.insert(room_id.to_owned(), encrypted);
                encrypted
            }
        };
        if !encrypted {
            self.hs.send_event(room_id, "m.room.message", &content).await?;
            return Ok(());
        }
        let Ok(room) = RoomId::parse(room_id) else {
            tracing::warn!(%room_id, "cannot send to a room with an invalid ID");
            return Ok(());
        };
        let members: Vec<OwnedUserId> = self
            .hs
            .joined_and_invited(room_id)
            .await?
            .iter()
            .filter_map(|member| UserId::parse(member).ok())
            .collect();
        crypto.send_encrypted(&room, &members, "m.room.message", &content).await?;
        Ok(())
    }

    /// Sends a message to a user in their direct chat, opening one if needed. Until they have
    /// joined a chat the bot opened, the message waits for them.
    async fn tell(&mut self, user_id: &str, text: &str) -> Result<(), HsError> {
        let room_id = self.direct_room(user_id).await?;
        let waiting = self.store.read(|state| state.awaiting_join.contains_key(&room_id));
        if waiting {
            self.save(|state| {
                state.awaiting_join.entry(room_id).or_default().push(text.to_owned());
            });
            return Ok(());
        }
        self.send(&room_id, text).await
    }

    /// Sends the messages that waited for a person to join their direct chat, oldest first.
    async fn flush_awaiting_join(&mut self, room_id: &str) -> Result<(), HsError> {
        while let Some(text) = self
            .store
            .read(|state| state.awaiting_join.get(room_id).and_then(|texts| texts.first().cloned()))
        {
            self.send(room_id, &text).await?;
            self.save(|state| {
                if let Some(texts) = state.awaiting_join.get_mut(room_id) {
                    texts.remove(0);
                }
            });
        }
        self.save(|state| {
            state.awaiting_join.remove(room_id);
        });
        Ok(())
    }

    /// Returns the direct chat with a user, creating it and recording it in the bot's
    /// `m.direct` account data when there is none.
    async fn direct_room(&mut self, user_id: &str) -> Result<String, HsError> {
        if let Some(room_id) = self.store.read(|state| state.dm_rooms.get(user_id).cloned()) {
            return Ok(room_id);
        }
        let encrypted = self.crypto.is_some();
        let room_id = self.hs.create_room(&[user_id.to_owned()], true, encrypted, None).await?;
        tracing::info!(%user_id, %room_id, encrypted, "opened a direct chat");
        self.encrypted_rooms.insert(room_id.clone(), encrypted);
        self.save(|state| {
            state.awaiting_join.insert(room_id.clone(), Vec::new());
        });
        self.remember_direct_room(user_id, &room_id).await;
        Ok(room_id)
    }

    async fn remember_direct_room(&mut self, user_id: &str, room_id: &str) {
        self.save(|state| {
            state.dm_rooms.insert(user_id.to_owned(), room_id.to_owned());
        });
        let direct: serde_json::Map<String, Value> = self.store.read(|state| {
            state.dm_rooms.iter().map(|(user, room)| (user.clone(), json!([room]))).collect()
        });
        if let Err(error) = self.hs.set_direct_rooms(&Value::Object(direct)).await {
            tracing::warn!(%error, "cannot update the bot's m.direct account data");
        }
    }

    /// Handles the events in the inbox, oldest first. Returns false when one must be tried
    /// again later because the homeserver could not be reached.
    async fn process_inbox(&mut self) -> bool {
        while let Some(item) = self.store.read(|state| state.inbox.front().cloned()) {
            match self.handle_event(&item.event).await {
                Ok(()) => {}
                Err(error) if error.is_transient() && item.attempts + 1 < MAX_ATTEMPTS => {
                    tracing::warn!(%error, attempts = item.attempts + 1, "cannot handle an event yet");
                    self.save(|state| {
                        if let Some(front) = state.inbox.front_mut() {
                            front.attempts += 1;
                        }
                    });
                    return false;
                }
                Err(error) => {
                    tracing::error!(%error, event_id = %item.event["event_id"], "gave up an event");
                }
            }
            self.save(|state| {
                state.inbox.pop_front();
            });
        }
        true
    }

    async fn handle_event(&mut self, event: &Value) -> Result<(), HsError> {
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
        let (sender, room_id, kind) = (text("sender"), text("room_id"), text("type"));
        if sender == self.bot_user_id() || room_id.is_empty() {
            return Ok(());
        }
        match kind.as_str() {
            "m.room.member" => self.handle_membership(event, &sender, &room_id).await,
            "m.room.message" => self.handle_content(&sender, &room_id, &event["content"]).await,
            "m.room.encrypted" => match self.decrypt(event, &room_id).await? {
                KeyWait::Done => Ok(()),
                KeyWait::Waiting(session_id) => {
                    tracing::debug!(%room_id, %sender, ?session_id, "waiting for the room key of a message");
                    let awaiting =
                        AwaitingKey { event: event.clone(), session_id, since_ms: crate::now_ms() };
                    self.save(|state| state.awaiting_keys.push(awaiting));
                    Ok(())
                }
            },
            "m.room.encryption" if event["state_key"] == "" => {
                self.encrypted_rooms.insert(room_id, true);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Handles the content of a message, plain or decrypted.
    async fn handle_content(
        &mut self,
        sender: &str,
        room_id: &str,
        content: &Value,
    ) -> Result<(), HsError> {
        // Bots send notices, so replying to notices could make two bots reply to each other
        // forever.
        if content["msgtype"] != "m.text" {
            return Ok(());
        }
        let body = content["body"].as_str().unwrap_or_default();
        self.handle_message(sender, room_id, body).await
    }

    /// Decrypts an `m.room.encrypted` event and handles what it contains. Returns whether the
    /// event must wait for its room key.
    async fn decrypt(&mut self, event: &Value, room_id: &str) -> Result<KeyWait, HsError> {
        let sender = event["sender"].as_str().unwrap_or_default().to_owned();
        let Some(crypto) = self.crypto.clone() else {
            tracing::warn!(%room_id, %sender, "cannot read an encrypted message without encryption");
            return Ok(KeyWait::Done);
        };
        let (Ok(room), Ok(raw)) = (RoomId::parse(room_id), Raw::new(event)) else {
            return Ok(KeyWait::Done);
        };
        match crypto.decrypt(&room, &raw).await {
            Ok(Decrypted::Event(decrypted)) => {
                if decrypted.event_type == "m.room.message" {
                    self.handle_content(&sender, room_id, &decrypted.content).await?;
                }
                Ok(KeyWait::Done)
            }
            Ok(Decrypted::MissingRoomKey { withheld_code: Some(code), .. }) => {
                tracing::warn!(%room_id, %sender, %code, "the sender withheld the room key of a message from the bot");
                self.send(room_id, messages::unreadable()).await?;
                Ok(KeyWait::Done)
            }
            Ok(Decrypted::MissingRoomKey { session_id, withheld_code: None }) => {
                Ok(KeyWait::Waiting(session_id))
            }
            Err(error) => {
                tracing::warn!(%room_id, %sender, %error, "cannot decrypt a message");
                Ok(KeyWait::Done)
            }
        }
    }

    /// Tries again the encrypted messages that wait for `session_id`, or all of them. The
    /// senders of those that waited longer than [`KEY_WAIT`] get a message to send them again.
    async fn retry_awaiting_keys(&mut self, session_id: Option<&str>) {
        let waiting: Vec<AwaitingKey> = self.store.read(|state| {
            state
                .awaiting_keys
                .iter()
                .filter(|item| session_id.is_none() || item.session_id.as_deref() == session_id)
                .cloned()
                .collect()
        });
        for item in waiting {
            let room_id = item.event["room_id"].as_str().unwrap_or_default().to_owned();
            let outcome = match self.decrypt(&item.event, &room_id).await {
                Ok(KeyWait::Waiting(_))
                    if crate::now_ms().saturating_sub(item.since_ms)
                        > KEY_WAIT.as_millis() as u64 =>
                {
                    tracing::warn!(%room_id, event_id = %item.event["event_id"], "the room key of a message never arrived");
                    self.send(&room_id, messages::unreadable()).await.map(|()| KeyWait::Done)
                }
                outcome => outcome,
            };
            match outcome {
                Ok(KeyWait::Waiting(_)) => continue,
                Ok(KeyWait::Done) => {}
                // Tried again at the next retry.
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "cannot handle a decrypted message yet");
                    continue;
                }
                Err(error) => tracing::error!(%error, "gave up a decrypted message"),
            }
            self.save(|state| state.awaiting_keys.retain(|waiting| waiting.event != item.event));
        }
    }

    /// Tries again the messages that waited for a room key that a sync brought in.
    async fn room_key_arrived(&mut self, key: Result<ReceivedRoomKey, RecvError>) {
        match key {
            Ok(key) => self.retry_awaiting_keys(Some(&key.session_id)).await,
            // Notices were missed, so any waiting message may be readable now.
            Err(RecvError::Lagged(_) | RecvError::Closed) => self.retry_awaiting_keys(None).await,
        }
    }

    async fn handle_membership(
        &mut self,
        event: &Value,
        sender: &str,
        room_id: &str,
    ) -> Result<(), HsError> {
        let target = event["state_key"].as_str().unwrap_or_default();
        let membership = event["content"]["membership"].as_str().unwrap_or_default();
        if target == self.bot_user_id() && membership == "invite" {
            self.hs.join(room_id).await?;
            let officers_room = self.store.read(|state| state.officers_room.clone());
            let has_direct_room = self.store.read(|state| state.dm_rooms.contains_key(sender));
            if event["content"]["is_direct"] == true
                && officers_room.as_deref() != Some(room_id)
                && !has_direct_room
            {
                self.remember_direct_room(sender, room_id).await;
            }
            return Ok(());
        }
        let is_their_direct_room =
            self.store.read(|state| state.dm_rooms.get(target).is_some_and(|room| room == room_id));
        if membership == "join" && is_their_direct_room {
            return self.flush_awaiting_join(room_id).await;
        }
        let officers_room = self.store.read(|state| state.officers_room.clone());
        let is_officer = self.config.officers.users.iter().any(|officer| officer == target);
        if membership == "join" && is_officer && officers_room.as_deref() == Some(room_id) {
            // Sent on each officer's arrival rather than at creation, so the room key of an
            // encrypted room reaches the device the officer joined from.
            return self.send(room_id, messages::officer_help()).await;
        }
        if matches!(membership, "leave" | "ban") && is_their_direct_room {
            // Without the other person the room is useless, so the bot leaves it and opens a
            // new one when it next has a message for them.
            self.save(|state| {
                state.dm_rooms.remove(target);
                state.awaiting_join.remove(room_id);
            });
            if let Err(error) = self.hs.leave(room_id).await {
                tracing::debug!(%error, "cannot leave an abandoned direct chat");
            }
        }
        Ok(())
    }

    async fn handle_message(
        &mut self,
        sender: &str,
        room_id: &str,
        body: &str,
    ) -> Result<(), HsError> {
        let officers_room = self.store.read(|state| state.officers_room.clone());
        if officers_room.as_deref() == Some(room_id) {
            return self.handle_officer_message(sender, room_id, body).await;
        }
        let names = self.register_names();
        let request = parse_user_message(body, &names);
        let reply = match request {
            UserRequest::Help => messages::help(&names),
            UserRequest::MissingNumber { register } => messages::missing_number(&register),
            UserRequest::Number { register, number } => {
                self.check_number(sender, register.as_deref(), &number).await?
            }
        };
        self.send(room_id, &reply).await
    }

    /// Checks a registration number sent by `user_id` and returns the reply for them.
    async fn check_number(
        &mut self,
        user_id: &str,
        register: Option<&str>,
        number: &str,
    ) -> Result<String, HsError> {
        self.registers.refresh();
        let names: Vec<String> = self.register_names().into_iter().map(str::to_owned).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let found = match register {
            Some(name) => self
                .registers
                .get(name)
                .and_then(|register| register.lookup(number).map(|entry| (register, entry)))
                .into_iter()
                .collect(),
            None => self.registers.lookup_anywhere(number),
        };
        let (register_name, entry) = match found.as_slice() {
            [] => return Ok(messages::not_found(register, number, &name_refs)),
            [(register, entry)] => (register.name().to_owned(), (*entry).clone()),
            _ => return Ok(messages::which_register(number, &name_refs)),
        };
        if entry.struck_off {
            return Ok(messages::struck_off(&register_name, &entry.number));
        }

        let (grant, in_review, holder) = self.store.read(|state| {
            let holder = state
                .grants
                .iter()
                .find(|(user, grant)| {
                    *user != user_id
                        && grant.register == register_name
                        && grant.number == entry.number
                })
                .map(|(user, _)| user.clone());
            let in_review = state.cases.values().any(|case| case.user_id == user_id);
            (state.grants.get(user_id).cloned(), in_review, holder)
        });
        if grant
            .is_some_and(|grant| grant.register == register_name && grant.number == entry.number)
        {
            return Ok(messages::already_verified(&register_name, &entry.number));
        }
        if in_review {
            return Ok(messages::already_in_review());
        }

        let Some(display_name) =
            self.hs.display_name(user_id).await?.filter(|name| !name.trim().is_empty())
        else {
            return Ok(messages::no_display_name());
        };
        let result = compare(&display_name, &entry.name);
        tracing::info!(%user_id, register = %register_name, number = %entry.number, score = result.score, outcome = ?result.outcome, "compared names");

        if let Some(holder) = holder {
            // One registration, two accounts: only an officer can tell who is who.
            let reason = format!("this number is already verified for {holder}; {result}");
            return self.open_case(user_id, &register_name, &entry, &display_name, reason).await;
        }
        match result.outcome {
            Outcome::Match => {
                self.grant_medical(user_id, &register_name, &entry, "register", None).await?;
                Ok(messages::verified(&register_name, &entry))
            }
            Outcome::Ambiguous => {
                self.open_case(user_id, &register_name, &entry, &display_name, result.to_string())
                    .await
            }
            Outcome::NoMatch => Ok(messages::name_mismatch(&register_name, &entry.number)),
        }
    }

    async fn open_case(
        &mut self,
        user_id: &str,
        register: &str,
        entry: &RegisterEntry,
        display_name: &str,
        reason: String,
    ) -> Result<String, HsError> {
        let case = ReviewCase {
            user_id: user_id.to_owned(),
            register: register.to_owned(),
            number: entry.number.clone(),
            display_name: display_name.to_owned(),
            register_name: entry.name.display(),
            reason,
            created_ts: crate::now_ms(),
        };
        let id = self
            .store
            .update(|state| {
                let id = state.next_case.max(1);
                state.next_case = id + 1;
                state.cases.insert(id, case.clone());
                id
            })
            .map_err(|error| {
                tracing::error!(%error, "cannot record a review case");
                error
            })
            .unwrap_or(0);
        tracing::info!(%user_id, case = id, "sent a case to the officers");
        if self.store.read(|state| state.officers_room.is_none()) {
            if let Err(error) = self.prepare_officers_room().await {
                tracing::warn!(%error, "cannot prepare the officers' room");
            }
        }
        match self.store.read(|state| state.officers_room.clone()) {
            Some(room_id) => self.send(&room_id, &messages::case_posted(id, &case)).await?,
            None => tracing::warn!(case = id, "no officers' room to post the case to"),
        }
        Ok(messages::sent_for_review(register, &entry.number))
    }

    /// Raises a user to `medical` with the attributes of their register entry.
    async fn grant_medical(
        &mut self,
        user_id: &str,
        register: &str,
        entry: &RegisterEntry,
        source: &'static str,
        note: Option<String>,
    ) -> Result<(), HsError> {
        let now = crate::now_ms();
        let verification = Verification {
            level: "medical",
            evidence: Evidence {
                source,
                register: Some(register.to_owned()),
                registration_number: Some(entry.number.clone()),
                verified_at: now,
                next_check: Some(now + self.config.bot.recheck_interval_secs * 1000),
                note,
            },
            professions: entry.professions.clone(),
            specialties: entry.specialties.clone(),
            organisations: entry.organisations.clone(),
            areas: entry.areas.clone(),
        };
        self.hs.set_verification(user_id, &verification).await?;
        tracing::info!(%user_id, %register, number = %entry.number, "granted medical verification");
        let grant =
            Grant { register: register.to_owned(), number: entry.number.clone(), verified_at: now };
        self.save(|state| {
            state.grants.insert(user_id.to_owned(), grant);
        });
        Ok(())
    }

    async fn handle_officer_message(
        &mut self,
        sender: &str,
        room_id: &str,
        body: &str,
    ) -> Result<(), HsError> {
        let Some(command) = parse_officer_command(body) else {
            return Ok(());
        };
        if !self.config.officers.users.iter().any(|officer| officer == sender) {
            tracing::warn!(%sender, "a non-officer tried an officer command");
            return self.send(room_id, messages::not_an_officer()).await;
        }
        let reply = match command {
            Err(usage) => usage.to_owned(),
            Ok(OfficerCommand::Help) => messages::officer_help().to_owned(),
            Ok(OfficerCommand::Queue) => {
                let cases: Vec<(u64, ReviewCase)> = self.store.read(|state| {
                    state.cases.iter().map(|(id, case)| (*id, case.clone())).collect()
                });
                messages::queue(&cases)
            }
            Ok(OfficerCommand::Approve { case }) => self.approve(sender, case).await?,
            Ok(OfficerCommand::Reject { case, reason }) => {
                self.reject(sender, case, &reason).await?
            }
        };
        self.send(room_id, &reply).await
    }

    async fn approve(&mut self, officer: &str, id: u64) -> Result<String, HsError> {
        let Some(case) = self.store.read(|state| state.cases.get(&id).cloned()) else {
            return Ok(messages::no_such_case(id));
        };
        self.registers.refresh();
        let entry = self
            .registers
            .get(&case.register)
            .and_then(|register| register.lookup(&case.number))
            .filter(|entry| !entry.struck_off)
            .cloned();
        let Some(entry) = entry else {
            self.close_case(id);
            self.tell(&case.user_id, &messages::struck_off(&case.register, &case.number)).await?;
            return Ok(messages::case_outdated(id, &case.register, &case.number));
        };
        let note = format!("approved by {officer} in case {id}");
        self.grant_medical(&case.user_id, &case.register, &entry, "officer", Some(note)).await?;
        self.close_case(id);
        tracing::info!(%officer, case = id, user_id = %case.user_id, "an officer approved a case");
        self.tell(&case.user_id, &messages::review_approved(&case.register, &entry)).await?;
        Ok(messages::case_approved(id, &case.user_id))
    }

    async fn reject(&mut self, officer: &str, id: u64, reason: &str) -> Result<String, HsError> {
        let Some(case) = self.store.read(|state| state.cases.get(&id).cloned()) else {
            return Ok(messages::no_such_case(id));
        };
        self.close_case(id);
        tracing::info!(%officer, case = id, user_id = %case.user_id, "an officer rejected a case");
        self.tell(&case.user_id, &messages::review_rejected(&case.register, &case.number, reason))
            .await?;
        Ok(messages::case_rejected(id, &case.user_id))
    }

    fn close_case(&self, id: u64) {
        self.save(|state| {
            state.cases.remove(&id);
        });
    }

    /// Walks the account list. With `all` it starts from the beginning, to grant `identity` to
    /// pending people who appeared on a roster or validated a trusted email since. Otherwise it
    /// reads only the accounts created since the last look, which are greeted.
    async fn scan_accounts(&mut self, all: bool) {
        let mut cursor =
            if all { None } else { self.store.read(|state| state.users_cursor.clone()) };
        loop {
            let page = match self.hs.users(cursor.as_deref(), USERS_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the account list");
                    return;
                }
            };
            for user in &page.users {
                if let Err(error) = self.consider_account(user).await {
                    // The account is looked at again in the next pass.
                    tracing::warn!(user_id = %user.user_id, %error, "cannot handle an account");
                    return;
                }
            }
            let Some(next) = page.next_from else {
                return;
            };
            if !all {
                self.save(|state| state.users_cursor = Some(next.clone()));
            }
            cursor = Some(next);
        }
    }

    /// Grants `identity` when a roster or a trusted email confirms it, greets a pending account
    /// the bot has not talked to yet, and brings officers into the officers' room.
    async fn consider_account(&mut self, user: &UserRecord) -> Result<(), HsError> {
        let is_officer = self.config.officers.users.contains(&user.user_id);
        if is_officer && !user.deactivated {
            self.bring_officer_in(&user.user_id).await;
        }
        // Bridge and bot accounts of application services are not people to verify.
        if user.deactivated
            || user.user_id == self.bot_user_id()
            || user.appservice.is_some()
            || user.level != "pending"
        {
            return Ok(());
        }
        let identity = self.check_identity(user).await?;
        let greeted = self.store.read(|state| state.dm_rooms.contains_key(&user.user_id));
        let names: Vec<String> = self.register_names().into_iter().map(str::to_owned).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match (greeted, identity) {
            (false, None) => self.tell(&user.user_id, &messages::greeting(&names)).await,
            (false, Some(how)) => {
                self.tell(&user.user_id, &messages::greeting_with_identity(&how, &names)).await
            }
            (true, Some(how)) => self.tell(&user.user_id, &messages::identity_granted(&how)).await,
            (true, None) => Ok(()),
        }
    }

    /// Grants `identity` to a pending account on a roster or with a validated email at a
    /// trusted domain. Returns how the identity was confirmed, in words.
    async fn check_identity(&mut self, user: &UserRecord) -> Result<Option<String>, HsError> {
        let now = crate::now_ms();
        let (evidence, organisations, professions, how) = if let Some(entry) =
            self.rosters.find(&user.user_id, &user.emails)
        {
            let organisation = entry.organisation.clone();
            let how = if organisation.is_empty() {
                "you are on a staff list".to_owned()
            } else {
                format!("you are on the staff list of {organisation}")
            };
            let evidence = Evidence { source: "roster", verified_at: now, ..Evidence::default() };
            let professions: Vec<String> =
                Some(entry.profession.clone()).filter(|p| !p.is_empty()).into_iter().collect();
            let organisations: Vec<String> =
                Some(organisation).filter(|o| !o.is_empty()).into_iter().collect();
            (evidence, organisations, professions, how)
        } else if let Some((email, domain)) = user.emails.iter().find_map(|email| {
            trusted_domain(email, &self.config.identity.trusted_email_domains)
                .map(|domain| (email.clone(), domain.to_owned()))
        }) {
            let evidence = Evidence {
                source: "email_domain",
                verified_at: now,
                note: Some(format!("validated address {email}")),
                ..Evidence::default()
            };
            (evidence, Vec::new(), Vec::new(), format!("your email address at {domain}"))
        } else {
            return Ok(None);
        };
        let verification = Verification {
            level: "identity",
            evidence,
            professions,
            specialties: Vec::new(),
            organisations,
            areas: Vec::new(),
        };
        self.hs.set_verification(&user.user_id, &verification).await?;
        tracing::info!(user_id = %user.user_id, source = verification.evidence.source, "granted identity verification");
        Ok(Some(how))
    }

    /// Checks every medical verification this gatekeeper granted against the current register
    /// files, and revokes those whose number was struck off or removed.
    pub async fn recheck(&mut self) {
        self.registers.refresh();
        let grants = self.store.read(|state| state.grants.clone());
        tracing::info!(grants = grants.len(), "re-checking medical verifications");
        for (user_id, grant) in grants {
            let Some(register) = self.registers.get(&grant.register) else {
                tracing::warn!(%user_id, register = %grant.register, "the register of a verification is no longer configured; not re-checked");
                continue;
            };
            if !register.healthy() {
                // A damaged or missing export must not revoke anyone.
                continue;
            }
            let why = match register.lookup(&grant.number) {
                Some(entry) if !entry.struck_off => continue,
                Some(_) => "is struck off or suspended in the register",
                None => "is no longer in the register",
            };
            let reason = format!("{} number {} {why}", grant.register, grant.number);
            match self.hs.revoke_verification(&user_id, &reason).await {
                Ok(()) => {}
                Err(error) if error.errcode() == Some("M_NOT_FOUND") => {}
                Err(error) => {
                    tracing::warn!(%user_id, %error, "cannot revoke a verification; trying at the next re-check");
                    continue;
                }
            }
            tracing::info!(%user_id, %reason, "revoked medical verification");
            self.save(|state| {
                state.grants.remove(&user_id);
            });
            if let Err(error) =
                self.tell(&user_id, &messages::revoked(&grant.register, &grant.number, why)).await
            {
                tracing::warn!(%user_id, %error, "cannot tell a user about a revocation");
            }
        }
    }
}
