use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::token::{base64url, validate};
use super::{AuthError, Identity, Role, TokenStore};

const USER_TOKEN: &str = "uUuUuUuUuUuUuUuUuUuUuUuUuUuUuUuU-user_0001";
const ADMIN_TOKEN: &str = "aAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaA-admin_0001";
const SHORT_TOKEN: &str = "Sh0rtT0kenSh0rt";

fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join("tokens");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn store() -> TokenStore {
    TokenStore::from_entries(vec![
        (Role::User, USER_TOKEN.to_string(), "alice".to_string()),
        (Role::Admin, ADMIN_TOKEN.to_string(), "ops".to_string()),
    ])
    .unwrap()
}

fn identity(role: Role, name: &str) -> Identity {
    Identity {
        role,
        name: name.to_string(),
    }
}

#[test]
fn loads_a_file_with_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "# corral tokens\n\n  user {USER_TOKEN} alice   # the judge backend\nadmin\t{ADMIN_TOKEN}\r\n"
    );
    let store = TokenStore::load(&write(dir.path(), &text, 0o600)).unwrap();
    assert!(!store.is_empty());
    let header = format!("Bearer {USER_TOKEN}");
    assert_eq!(
        store.authenticate(Some(&header)).unwrap(),
        identity(Role::User, "alice")
    );
    let header = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        store.authenticate(Some(&header)).unwrap(),
        identity(Role::Admin, "admin-line4")
    );
}

#[test]
fn comments_only_file_is_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::load(&write(dir.path(), "# nothing yet\n\n", 0o640)).unwrap();
    assert!(store.is_empty());
    let header = format!("Bearer {USER_TOKEN}");
    assert!(matches!(
        store.authenticate(Some(&header)),
        Err(AuthError::Invalid)
    ));
}

#[test]
fn world_readable_or_writable_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o602, 0o666] {
        let path = write(dir.path(), &format!("user {USER_TOKEN}\n"), mode);
        let err = TokenStore::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, AuthError::File { line: None, .. }), "{err:?}");
        assert!(text.contains(&format!("{:04o}", mode)), "{text}");
        assert!(!text.contains(USER_TOKEN), "{text}");
    }
}

#[test]
fn bad_lines_name_the_line_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("# c\nuser {USER_TOKEN}\nadmin {SHORT_TOKEN} bob\n"),
            3,
            "shorter than 32",
        ),
        (format!("user {USER_TOKEN}!\n"), 1, "outside [A-Za-z0-9_-]"),
        (format!("{USER_TOKEN} user\n"), 1, "unknown role"),
        ("\nuser\n".to_string(), 2, "missing token"),
        (format!("user {USER_TOKEN} a b\n"), 1, "unexpected field"),
        (
            format!("user {USER_TOKEN} a\nadmin {USER_TOKEN} b\n"),
            2,
            "same token as line 1",
        ),
        (
            format!("user {USER_TOKEN} a\nadmin {ADMIN_TOKEN} a\n"),
            2,
            "same name as line 1",
        ),
    ];
    for (text, line, reason) in cases {
        let path = write(dir.path(), &text, 0o600);
        let err = TokenStore::load(&path).unwrap_err();
        let shown = err.to_string();
        let debug = format!("{err:?}");
        assert!(
            matches!(err, AuthError::File { line: Some(l), .. } if l == line),
            "{shown}"
        );
        assert!(
            shown.starts_with(&format!("{}:{line}: ", path.display())),
            "{shown}"
        );
        assert!(shown.contains(reason), "{shown}");
        for token in [USER_TOKEN, ADMIN_TOKEN, SHORT_TOKEN] {
            assert!(!shown.contains(token) && !debug.contains(token), "{shown}");
        }
    }
}

#[test]
fn missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = TokenStore::load(&dir.path().join("none")).unwrap_err();
    assert!(matches!(err, AuthError::File { line: None, .. }), "{err:?}");
    assert_eq!(err.http_status(), 500);
}

#[test]
fn from_entries_checks_like_the_file() {
    let short = TokenStore::from_entries(vec![(Role::User, SHORT_TOKEN.into(), "x".into())]);
    assert!(matches!(short, Err(AuthError::Entry { index: 0, .. })));
    let dup = TokenStore::from_entries(vec![
        (Role::User, USER_TOKEN.into(), "a".into()),
        (Role::Admin, USER_TOKEN.into(), "b".into()),
    ]);
    let err = dup.err().unwrap();
    assert!(matches!(err, AuthError::Entry { index: 1, .. }), "{err:?}");
    assert!(!err.to_string().contains(USER_TOKEN));
    let unnamed = TokenStore::from_entries(vec![(Role::User, USER_TOKEN.into(), String::new())]);
    assert!(unnamed.is_err());
    assert!(TokenStore::from_entries(vec![]).unwrap().is_empty());
}

#[test]
fn header_parsing() {
    let store = store();
    assert!(matches!(store.authenticate(None), Err(AuthError::Missing)));
    for malformed in [
        "",
        "   ",
        "Bearer",
        "Bearer   ",
        "Basic x",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        &format!("Bearer{USER_TOKEN}"),
        &format!("Bearer {USER_TOKEN} extra"),
        USER_TOKEN,
    ] {
        let result = store.authenticate(Some(malformed));
        assert!(
            matches!(result, Err(AuthError::Malformed)),
            "{malformed:?}: {result:?}"
        );
    }
    for ok in [
        format!("Bearer {USER_TOKEN}"),
        format!("bearer {USER_TOKEN}"),
        format!("BEARER {USER_TOKEN}"),
        format!("  Bearer    {USER_TOKEN}  "),
        format!("Bearer\t{USER_TOKEN}"),
    ] {
        assert_eq!(
            store.authenticate(Some(&ok)).unwrap(),
            identity(Role::User, "alice"),
            "{ok:?}"
        );
    }
}

#[test]
fn wrong_token_is_invalid() {
    let store = store();
    let near_miss = format!("{}X", &USER_TOKEN[..USER_TOKEN.len() - 1]);
    for token in [
        near_miss.as_str(),
        &USER_TOKEN[..32],
        "x",
        "a+b/c=",
        &format!("{USER_TOKEN}{USER_TOKEN}"),
    ] {
        let result = store.authenticate(Some(&format!("Bearer {token}")));
        assert!(
            matches!(result, Err(AuthError::Invalid)),
            "{token}: {result:?}"
        );
    }
    for err in [AuthError::Missing, AuthError::Malformed, AuthError::Invalid] {
        assert_eq!(err.http_status(), 401);
    }
}

#[test]
fn roles_order_and_serialize() {
    assert!(Role::Admin > Role::User);
    assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
    assert_eq!(Role::User.to_string(), "user");
}

#[test]
fn debug_prints_counts_only() {
    let shown = format!("{:?} {:#?}", store(), store());
    assert!(
        !shown.contains(USER_TOKEN) && !shown.contains(ADMIN_TOKEN),
        "{shown}"
    );
    assert!(
        shown.contains("users: 1") && shown.contains("admins: 1"),
        "{shown}"
    );
}

#[test]
fn generated_tokens_are_43_url_safe_characters_and_accepted() {
    let a = TokenStore::generate_token().unwrap();
    let b = TokenStore::generate_token().unwrap();
    assert_ne!(a, b);
    for token in [&a, &b] {
        assert_eq!(token.len(), 43, "{token}");
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{token}"
        );
        assert_eq!(validate(token), Ok(()));
    }
    let store = TokenStore::from_entries(vec![(Role::Admin, a.clone(), "gen".into())]).unwrap();
    assert_eq!(
        store
            .authenticate(Some(&format!("Bearer {a}")))
            .unwrap()
            .role,
        Role::Admin
    );
}

#[test]
fn base64url_matches_rfc4648_vectors() {
    // RFC 4648 section 10, unpadded; and the two URL-safe characters.
    let vectors: [(&[u8], &str); 7] = [
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (&[0xfb, 0xff, 0xbf], "-_-_"),
    ];
    for (input, expected) in vectors {
        assert_eq!(base64url(input), expected);
    }
    assert_eq!(base64url(&[0u8; 32]).len(), 43);
}
