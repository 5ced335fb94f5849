use ruma::OwnedDeviceId;

use super::SessionRequest;
use crate::error::ErrorCode;
use crate::service::test_support::server;
use crate::storage::tables::DeviceKind;

fn device_ids(devices: &[super::Device]) -> Vec<OwnedDeviceId> {
    devices.iter().map(|device| device.device_id.clone()).collect()
}

fn error_code(result: crate::error::Result<impl std::fmt::Debug>) -> ErrorCode {
    match result {
        Err(crate::error::Error::Matrix { code, .. }) => code,
        other => panic!("expected a Matrix error, got {other:?}"),
    }
}

#[tokio::test]
async fn primary_login_replaces_previous_primary() {
    let server = server();
    let accounts = &server.services.accounts;
    let alice = accounts.create_user("alice", None, false).await.unwrap();
    let first = accounts.start_session(&alice, SessionRequest::default()).unwrap();
    let linked = SessionRequest { kind: DeviceKind::Linked, ..Default::default() };
    let laptop = accounts.start_session(&alice, linked).unwrap();

    let second = accounts.start_session(&alice, SessionRequest::default()).unwrap();

    assert_eq!(second.replaced_device_ids, vec![first.device_id.clone()]);
    assert!(accounts.authenticate(&first.access_token).unwrap().is_none());
    assert!(accounts.authenticate(&laptop.access_token).unwrap().is_some());
    let mut listed = device_ids(&accounts.list_devices(&alice).unwrap());
    listed.sort();
    let mut expected = vec![second.device_id.clone(), laptop.device_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn refresh_revokes_previous_token_after_use() {
    let server = server();
    let accounts = &server.services.accounts;
    let alice = accounts.create_user("alice", None, false).await.unwrap();
    let request = SessionRequest { refresh_token: true, ..Default::default() };
    let session = accounts.start_session(&alice, request).unwrap();
    let first_refresh = session.refresh_token.expect("a refresh token was requested");

    let refreshed = accounts.refresh(&first_refresh).unwrap();
    assert!(accounts.authenticate(&session.access_token).unwrap().is_none());
    assert!(accounts.authenticate(&refreshed.access_token).unwrap().is_some());

    let code = error_code(accounts.refresh(&first_refresh));
    assert_eq!(code, ErrorCode::UnknownToken { soft_logout: false });
    assert!(accounts.refresh(&refreshed.refresh_token).is_ok());
}

#[tokio::test]
async fn login_token_admits_one_login() {
    let server = server();
    let accounts = &server.services.accounts;
    let alice = accounts.create_user("alice", None, false).await.unwrap();
    let primary = accounts.start_session(&alice, SessionRequest::default()).unwrap();
    let sender = accounts.authenticate(&primary.access_token).unwrap().unwrap();

    let (token, _) = accounts.issue_login_token(&sender).unwrap();

    assert_eq!(accounts.consume_login_token(&token).unwrap(), alice);
    let code = error_code(accounts.consume_login_token(&token));
    assert_eq!(code, ErrorCode::Forbidden);
}
