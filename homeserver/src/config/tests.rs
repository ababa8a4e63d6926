//! Configuration: defaults, merging of file, environment and flags, and
//! the rules that span settings.

use super::*;

#[test]
fn public_base_urls_are_checked() {
    assert_eq!(
        public_base_url("https://matrix.example.org/").unwrap(),
        "https://matrix.example.org"
    );
    assert_eq!(
        public_base_url("http://10.0.0.5:8008").unwrap(),
        "http://10.0.0.5:8008"
    );
    for bad in [
        "matrix.example.org",
        "ftp://x.example",
        "https://x.example/?a=b",
        "https://u@x.example",
    ] {
        assert!(public_base_url(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.toml");
    std::fs::write(
        &path,
        "server_name = \"file.example\"\nallow_registration = true\nlisten = \"127.0.0.1:9000\"\nstorage = \"sqlite\"\n",
    )
    .unwrap();
    let args = Args::parse_from([
        "homeserver",
        "--config",
        path.to_str().unwrap(),
        "--server-name",
        "flag.example",
    ]);
    let config = Config::from_args(args).unwrap();
    assert_eq!(config.server_name, "flag.example");
    assert!(config.allow_registration);
    assert_eq!(config.listen.port(), 9000);
}

#[test]
fn zero_config_has_defaults() {
    let config = Config::from_args(Args::parse_from(["homeserver"])).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8008");
    assert_eq!(config.server_name, "localhost");
    assert!(!config.allow_registration);
}

#[test]
fn postgres_from_the_file_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.toml");
    std::fs::write(
        &path,
        "storage = \"postgres\"\n[postgres]\nurl = \"postgres://file/db\"\nmax_connections = 4\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let from_file =
        Config::from_args(Args::parse_from(["homeserver", "--config", config])).unwrap();
    assert_eq!(from_file.storage, Engine::Postgres);
    let pg = from_file.postgres.unwrap();
    assert_eq!(
        (pg.url.as_str(), pg.max_connections),
        ("postgres://file/db", 4)
    );

    // The flag wins over the file's URL and keeps its pool size.
    let args = [
        "homeserver",
        "--config",
        config,
        "--postgres-url",
        "postgres://flag/db",
    ];
    let pg = Config::from_args(Args::parse_from(args))
        .unwrap()
        .postgres
        .unwrap();
    assert_eq!(
        (pg.url.as_str(), pg.max_connections),
        ("postgres://flag/db", 4)
    );

    // A URL alone selects the engine; storage=postgres without one is refused.
    let args = ["homeserver", "--postgres-url", "postgres://flag/db"];
    let config = Config::from_args(Args::parse_from(args)).unwrap();
    assert_eq!(config.storage, Engine::Postgres);
    std::fs::write(&path, "storage = \"postgres\"\n").unwrap();
    let args = ["homeserver", "--config", path.to_str().unwrap()];
    let err = Config::from_args(Args::parse_from(args)).unwrap_err();
    assert!(err.to_string().contains("[postgres] url"), "{err}");
}

#[test]
fn flags_keep_the_rest_of_their_file_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.toml");
    std::fs::write(
        &path,
        "[redis]\nurl = \"redis://file\"\nkey_prefix = \"f:\"\n\
         [kafka]\nbrokers = \"file:9092\"\ntopic = \"t\"\n",
    )
    .unwrap();
    let args = Args::parse_from([
        "homeserver",
        "--config",
        path.to_str().unwrap(),
        "--redis-url",
        "redis://flag",
        "--kafka-brokers",
        "flag:9092",
        "--presence-idle-ms",
        "7",
    ]);
    let config = Config::from_args(args).unwrap();
    let redis = config.redis.unwrap();
    assert_eq!(
        (redis.url.as_str(), redis.key_prefix.as_str()),
        ("redis://flag", "f:")
    );
    let kafka = config.kafka.unwrap();
    assert_eq!(
        (kafka.brokers.as_str(), kafka.topic.as_str()),
        ("flag:9092", "t")
    );
    assert_eq!(config.presence.idle_after, Duration::from_millis(7));
    assert_eq!(config.presence.offline_after, Duration::from_secs(30));
}

#[test]
fn federation_from_flags_and_its_rules() {
    let off = Config::from_args(Args::parse_from(["homeserver"])).unwrap();
    assert!(!off.federation.enabled, "no federation unless configured");

    let args = Args::parse_from([
        "homeserver",
        "--server-name",
        "localhost:8481",
        "--federation-listen",
        "127.0.0.1:8481",
        "--tls-cert",
        "/c.pem",
        "--tls-key",
        "/k.pem",
        "--federation-allow-private",
    ]);
    let config = Config::from_args(args).unwrap();
    assert_eq!(config.server_name, "localhost:8481");
    let federation = config.federation;
    assert!(federation.enabled && federation.allow_private);
    assert!(!federation.insecure_skip_verify);
    assert_eq!(federation.listen.unwrap().port(), 8481);
    assert_eq!(federation.tls.unwrap().key, PathBuf::from("/k.pem"));

    // A TLS listener without a certificate is refused at start.
    let args = ["homeserver", "--federation-listen", "127.0.0.1:8448"];
    let err = Config::from_args(Args::parse_from(args)).unwrap_err();
    assert!(err.to_string().contains("tls_cert"), "{err}");
}

#[test]
fn a_missing_file_is_named() {
    let args = Args::parse_from(["homeserver", "--config", "/nonexistent/tern.toml"]);
    let err = Config::from_args(args).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tern.toml"), "{err}");
}

#[test]
fn unknown_file_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.toml");
    std::fs::write(&path, "sever_name = \"typo\"\n").unwrap();
    let args = Args::parse_from(["homeserver", "--config", path.to_str().unwrap()]);
    assert!(Config::from_args(args).is_err());
}
