//! The verification gatekeeper: `caduceus` and `caduceus-appservice` running side by side, and
//! people talking to the verification bot with matrix-sdk clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use caduceus_tests::{
    encode_path_segment, Account, TestAppservice, TestClient, TestServer, PASSWORD,
    SEVERAL_PRIMARY_DEVICES,
};
use matrix_sdk::config::SyncSettings;
use matrix_sdk::ruma::events::room::member::StrippedRoomMemberEvent;
use matrix_sdk::ruma::events::room::message::{
    OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::{Client, Room};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Maximum time the bot may take to reply, including a homeserver retrying a transaction.
const PATIENCE: Duration = Duration::from_secs(60);

const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

/// Returns the path of the example BIG register, which tests copy so they can rewrite it.
fn example_register() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../appservice/examples/registers/big.csv")
}

/// Returns the gatekeeper's settings in tests: the example BIG register, quick polling and a
/// re-check every `recheck_secs`.
fn gatekeeper_config(recheck_secs: u64) -> String {
    format!(
        "[bot]\n\
         users_poll_interval_secs = 1\n\
         recheck_interval_secs = {recheck_secs}\n\
         \n\
         [officers]\n\
         users = [\"@officer:localhost\"]\n\
         \n\
         [[registers]]\n\
         name = \"BIG\"\n\
         path = \"big.csv\"\n\
         country = \"NL\"\n\
         struck_off_values = [\"Doorgehaald\"]\n\
         \n\
         [registers.columns]\n\
         number = \"big_nummer\"\n\
         given_names = \"voorletters\"\n\
         name_prefix = \"tussenvoegsel\"\n\
         surname = \"achternaam\"\n\
         professions = \"beroep\"\n\
         specialties = \"specialisme\"\n\
         organisations = \"instelling\"\n\
         postal_code = \"postcode\"\n\
         city = \"plaats\"\n\
         status = \"status\"\n"
    )
}

/// A homeserver and a gatekeeper registered with it.
struct Setup {
    server: TestServer,
    gatekeeper: TestAppservice,
}

impl Setup {
    async fn start(recheck_secs: u64) -> Self {
        let mut gatekeeper = TestAppservice::prepare();
        std::fs::copy(example_register(), gatekeeper.dir().join("big.csv")).unwrap();
        // Each person signs in twice, over raw HTTP and with matrix-sdk, so the server allows
        // several password devices per account.
        let server = TestServer::start_with_config(
            &gatekeeper.homeserver_config(),
            &[SEVERAL_PRIMARY_DEVICES],
        )
        .await;
        gatekeeper.start(&server, &gatekeeper_config(recheck_secs)).await;
        Self { server, gatekeeper }
    }

    /// Reads a user's verification record through the privileged admin API.
    async fn verification(&self, user_id: &str) -> Value {
        let path =
            format!("/_caduceus/admin/v1/users/{}/verification", encode_path_segment(user_id));
        let response = self.server.get(&path, Some(&self.gatekeeper.as_token)).await;
        response.assert_status(200);
        response.body
    }

    /// Waits until a user's verification level is `level`.
    async fn wait_for_level(&self, user_id: &str, level: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let record = self.verification(user_id).await;
            if record["level"] == level {
                return record;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user_id} did not reach level {level}: {record}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A person with a matrix-sdk client that syncs in the background, joins the rooms it is
/// invited to, and reports every message it can read.
struct Person {
    client: TestClient,
    messages: mpsc::UnboundedReceiver<(OwnedRoomId, String)>,
    sync_task: JoinHandle<()>,
}

impl Drop for Person {
    fn drop(&mut self) {
        self.sync_task.abort();
    }
}

impl Person {
    async fn login(server: &TestServer, localpart: &str) -> Self {
        let client = server.sdk_client().await;
        client
            .matrix_auth()
            .login_username(localpart, PASSWORD)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{localpart} cannot log in: {error}"));

        let (sender, messages) = mpsc::unbounded_channel();
        client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, room: Room| {
            let sender = sender.clone();
            async move {
                let _ = sender.send((room.room_id().to_owned(), event.content.body().to_owned()));
            }
        });
        client.add_event_handler(
            |event: StrippedRoomMemberEvent, room: Room, client: Client| async move {
                if client.user_id() == Some(&*event.state_key) {
                    if let Err(error) = room.join().await {
                        eprintln!("cannot join {}: {error}", room.room_id());
                    }
                }
            },
        );
        client.sync_once(SyncSettings::default()).await.expect("first sync");
        let background: Client = (*client).clone();
        let sync_task = tokio::spawn(async move {
            let settings = SyncSettings::default().timeout(Duration::from_secs(1));
            if let Err(error) = background.sync(settings).await {
                eprintln!("background sync stopped: {error}");
            }
        });
        Self { client, messages, sync_task }
    }

    /// Waits for a message containing `needle` and returns its room.
    async fn expect_message(&mut self, needle: &str) -> OwnedRoomId {
        let wait = async {
            loop {
                let (room_id, body) = self.messages.recv().await.expect("the handler lives");
                if body.contains(needle) {
                    return room_id;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no message containing {needle:?} within {PATIENCE:?}"))
    }

    /// Sends a text message once the client has joined the room.
    async fn say(&self, room_id: &OwnedRoomId, text: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let room = loop {
            match self.client.get_room(room_id) {
                Some(room) if room.state() == matrix_sdk::RoomState::Joined => break room,
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "never joined {room_id}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        room.send(RoomMessageEventContent::text_plain(text)).await.expect("the message is sent");
    }
}

async fn set_display_name(server: &TestServer, account: &Account, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", account.user_path());
    server.put(&path, account.token(), &json!({ "displayname": name })).await.assert_status(200);
}

/// Searches the directory and returns the user IDs found, or nothing when refused.
async fn search(server: &TestServer, account: &Account, term: &str) -> Vec<String> {
    let response = server.post(SEARCH, account.token(), &json!({ "search_term": term })).await;
    if response.status == 403 {
        return Vec::new();
    }
    response.assert_status(200).assert_spec(SEARCH);
    let results = response.body["results"].as_array().cloned().unwrap_or_default();
    results.iter().filter_map(|result| result["user_id"].as_str().map(str::to_owned)).collect()
}

/// Checks that a direct chat with the bot is encrypted and that the server holds only
/// ciphertext of the messages the person and the bot sent in it.
async fn assert_encrypted_both_ways(
    setup: &Setup,
    account: &Account,
    person: &Person,
    room_id: &OwnedRoomId,
) {
    let room = person.client.get_room(room_id).expect("the client has the direct chat");
    let state = room.latest_encryption_state().await.expect("the encryption state is known");
    assert!(state.is_encrypted(), "the direct chat with the bot is not encrypted");

    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
        encode_path_segment(room_id.as_str())
    );
    let response = setup.server.get(&path, account.token()).await;
    response.assert_status(200).assert_spec("/_matrix/client/v3/rooms/{roomId}/messages");
    let chunk = response.body["chunk"].as_array().expect("a chunk of events");
    let types_sent_by = |user_id: &str| -> Vec<&str> {
        chunk
            .iter()
            .filter(|event| event["sender"] == user_id && event.get("state_key").is_none())
            .filter_map(|event| event["type"].as_str())
            .collect()
    };
    let bot = setup.gatekeeper.bot_user_id();
    for user_id in [bot.as_str(), account.user_id.as_str()] {
        let types = types_sent_by(user_id);
        assert!(!types.is_empty(), "{user_id} sent nothing in the direct chat: {chunk:?}");
        assert!(
            types.iter().all(|kind| *kind == "m.room.encrypted"),
            "{user_id} sent events in the clear: {types:?}"
        );
    }
    for event in chunk {
        let text = event.to_string();
        assert!(!text.contains("19012345601"), "the number is readable on the server: {text}");
    }
}

/// Registers `localpart` as "Jan de Vries", waits for the bot's greeting, and sends `message`.
/// Returns the account, the client and the direct chat.
async fn greeted_person(setup: &Setup, localpart: &str) -> (Account, Person, OwnedRoomId) {
    let account = setup.server.register_pending(localpart).await;
    set_display_name(&setup.server, &account, "Jan de Vries").await;
    let mut person = Person::login(&setup.server, localpart).await;
    let room_id = person.expect_message("registration number").await;
    (account, person, room_id)
}

#[tokio::test]
async fn big_number_grants_medical_and_listing() {
    let setup = Setup::start(3600).await;
    let server = &setup.server;

    // A new account is pending: it cannot bring anyone into a room.
    let (jan, mut person, room_id) = greeted_person(&setup, "jan").await;
    let colleague = server.register("colleague").await;
    let create = server
        .post(
            "/_matrix/client/v3/createRoom",
            jan.token(),
            &json!({ "invite": [colleague.user_id] }),
        )
        .await;
    create.assert_matrix_error(403, "M_FORBIDDEN");
    assert_eq!(setup.verification(&jan.user_id).await["level"], "pending");

    person.say(&room_id, "big 190 123 456 01").await;
    person.expect_message("You are verified as a healthcare professional").await;
    assert_encrypted_both_ways(&setup, &jan, &person, &room_id).await;

    let record = setup.wait_for_level(&jan.user_id, "medical").await;
    assert_eq!(record["evidence"]["register"], "BIG");
    assert_eq!(record["evidence"]["registration_number"], "19012345601");
    assert_eq!(record["specialties"], json!(["Cardiologie", "Interne geneeskunde"]));
    assert_eq!(record["areas"][0]["city"], "Utrecht");

    // A medical searcher finds Jan by the register's specialty; an identity user (what
    // `register` makes) searching the whole directory does not.
    let searcher = server.register("searcher").await;
    let nurse = server.register("nurse").await;
    server
        .admin_ok(&["set-verification", &searcher.user_id, "--level", "medical", "--unlisted"])
        .await;
    let mut found = Vec::new();
    for _ in 0..50 {
        found = search(server, &searcher, "cardiologie").await;
        if found.contains(&jan.user_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found.contains(&jan.user_id), "a medical searcher found {found:?}");
    let found = search(server, &nurse, "cardiologie").await;
    assert!(!found.contains(&jan.user_id), "an identity user found {found:?}");

    // Sending the number again changes nothing.
    person.say(&room_id, "BIG 19012345601").await;
    person.expect_message("already verified").await;
}

#[tokio::test]
async fn bot_rejects_wrong_numbers_plainly() {
    let setup = Setup::start(3600).await;
    let (jan, mut person, room_id) = greeted_person(&setup, "jan").await;

    person.say(&room_id, "BIG 29012345602").await;
    person.expect_message("registered under a different name").await;
    person.say(&room_id, "BIG 19099999901").await;
    person.expect_message("struck off").await;
    person.say(&room_id, "BIG 11111111111").await;
    person.expect_message("could not find").await;
    person.say(&room_id, "hello").await;
    person.expect_message("for example: BIG").await;
    assert_eq!(setup.verification(&jan.user_id).await["level"], "pending");
}

#[tokio::test]
async fn recheck_revokes_struck_off_number() {
    let setup = Setup::start(2).await;
    let (jan, mut person, room_id) = greeted_person(&setup, "jan").await;
    person.say(&room_id, "BIG 19012345601").await;
    person.expect_message("You are verified").await;
    setup.wait_for_level(&jan.user_id, "medical").await;

    // The register's next export lists the number as struck off.
    let register = setup.gatekeeper.dir().join("big.csv");
    let struck_off = std::fs::read_to_string(&register).unwrap().replace(
        "UMC Utrecht,3584 CX,Utrecht,Geregistreerd",
        "UMC Utrecht,3584 CX,Utrecht,Doorgehaald",
    );
    std::fs::write(&register, struck_off).unwrap();

    person.expect_message("has ended").await;
    let record = setup.wait_for_level(&jan.user_id, "pending").await;
    assert!(record["specialties"].as_array().is_none_or(Vec::is_empty), "{record}");
}

#[tokio::test]
async fn gatekeeper_outage_loses_no_message() {
    let mut setup = Setup::start(3600).await;
    let (jan, mut person, room_id) = greeted_person(&setup, "jan").await;

    setup.gatekeeper.kill();
    person.say(&room_id, "BIG 19012345601").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.verification(&jan.user_id).await["level"], "pending");

    setup.gatekeeper.restart().await;
    person.expect_message("You are verified").await;
    setup.wait_for_level(&jan.user_id, "medical").await;
}

#[tokio::test]
async fn officer_decides_ambiguous_name() {
    let setup = Setup::start(3600).await;
    let server = &setup.server;
    server.register("officer").await;
    let mut officer_client = Person::login(server, "officer").await;

    let johannes = server.register_pending("johannes").await;
    set_display_name(server, &johannes, "Jan de Vris").await;
    let mut person = Person::login(server, "johannes").await;
    let room_id = person.expect_message("registration number").await;
    person.say(&room_id, "BIG 19012345601").await;
    person.expect_message("verification officer will look at it").await;

    // The bot opens the officers' room when the first case needs it, and introduces the
    // commands there before it posts the case.
    let officers_room = officer_client.expect_message("!approve").await;
    officer_client.expect_message("Case 1:").await;
    officer_client.say(&officers_room, "!queue").await;
    officer_client.expect_message("1 case(s) waiting").await;
    officer_client.say(&officers_room, "!approve 1").await;
    officer_client.expect_message("Case 1 approved").await;
    person.expect_message("A verification officer confirmed").await;
    let record = setup.wait_for_level(&johannes.user_id, "medical").await;
    assert_eq!(record["evidence"]["source"], "officer");
}
