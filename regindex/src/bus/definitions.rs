//! RabbitMQ definitions for provisioning a broker: the [`Topology`], plus the vhost, the
//! user and its permissions that `amqp.url` logs in with.
//!
//! A broker that loads definitions at boot (`load_definitions`, as docker-compose.yml's
//! does) creates neither its default `guest` user nor the `/` vhost, so the definitions
//! must create what the api and the worker log in with. The password goes in as RabbitMQ
//! stores it, a salted SHA-256 hash, never in clear. `regindexctl broker-definitions`
//! prints these for a configuration; `bus-config/definitions.json` holds them for
//! docker-compose.yml's login (a unit test keeps the three in step).

use std::str::FromStr as _;

use base64::Engine as _;
use lapin::uri::AMQPUri;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::Topology;

/// RabbitMQ's name of the hashing [`password_hash`] implements (its default since 3.6).
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// Tags of the created user: `management` lets it into the management UI, limited to the
/// vhosts it has permissions on (no broker administration).
const USER_TAGS: [&str; 1] = ["management"];

/// Why definitions cannot be made for a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionsError {
    /// The URL itself is not repeated: it carries the password.
    #[error("amqp.url is not a valid AMQP URL")]
    BadUrl,
    #[error("amqp.url logs in as guest/guest; set the user and password the broker should create")]
    WellKnownLogin,
    #[error(
        "amqp.url names the empty vhost; add one, e.g. amqp://user:password@host:5672/regindex"
    )]
    EmptyVhost,
}

/// The login an AMQP URL carries (percent-decoded; the vhost is `/` when the URL has no
/// path, as the client connects).
#[derive(Debug, Clone)]
pub struct BrokerLogin {
    pub user: String,
    pub password: SecretString,
    pub vhost: String,
}

impl BrokerLogin {
    pub fn from_url(url: &str) -> Result<Self, DefinitionsError> {
        let uri = AMQPUri::from_str(url).map_err(|_| DefinitionsError::BadUrl)?;
        let user = uri.authority.userinfo.username;
        let password = uri.authority.userinfo.password;
        if user == "guest" && password == "guest" {
            return Err(DefinitionsError::WellKnownLogin);
        }
        if uri.vhost.is_empty() {
            return Err(DefinitionsError::EmptyVhost);
        }
        Ok(Self {
            user,
            password: SecretString::from(password),
            vhost: uri.vhost,
        })
    }
}

/// A password as RabbitMQ's `rabbit_password_hashing_sha256` stores it:
/// `base64(salt ++ sha256(salt ++ utf8(password)))` with a 32-bit salt.
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&hasher.finalize());
    base64::engine::general_purpose::STANDARD.encode(salted)
}

/// The definitions of `topology` in the login's vhost, with that vhost, the user (its
/// password hashed with `salt`, which should be random) and the user's permissions: every
/// right on its vhost and none elsewhere.
pub fn definitions(topology: &Topology, login: &BrokerLogin, salt: [u8; 4]) -> Value {
    let mut definitions = topology.definitions(&login.vhost);
    definitions["vhosts"] = json!([{ "name": login.vhost }]);
    definitions["users"] = json!([{
        "name": login.user,
        "password_hash": password_hash(login.password.expose_secret(), salt),
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": USER_TAGS,
    }]);
    definitions["permissions"] = json!([{
        "user": login.user, "vhost": login.vhost,
        "configure": ".*", "write": ".*", "read": ".*",
    }]);
    definitions
}

/// The AMQP URL docker-compose.yml gives the api and the worker (`REGINDEX_AMQP__URL`).
#[cfg(any(test, feature = "test-support"))]
pub fn compose_amqp_url() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let compose = std::fs::read_to_string(path).expect("reading docker-compose.yml");
    compose
        .lines()
        .find_map(|line| line.trim().strip_prefix("REGINDEX_AMQP__URL:"))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .expect("docker-compose.yml sets REGINDEX_AMQP__URL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BUS_CONFIG_DEFINITIONS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bus-config/definitions.json"
    );

    /// Fixed so that the committed file is reproducible; `regindexctl broker-definitions`
    /// draws a random one.
    const COMPOSE_SALT: [u8; 4] = *b"rgdx";

    #[test]
    fn hashes_passwords_as_rabbitmq_does() {
        // The worked example of RabbitMQ's password guide: salt 908DC60A, password test12.
        assert_eq!(
            password_hash("test12", [0x90, 0x8d, 0xc6, 0x0a]),
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
        );
    }

    #[test]
    fn logins_come_from_the_url() {
        let login =
            BrokerLogin::from_url("amqp://app%40x:p%2Fw@rabbitmq:5672/prod%2Findex").unwrap();
        assert_eq!(login.user, "app@x");
        assert_eq!(login.password.expose_secret(), "p/w");
        assert_eq!(login.vhost, "prod/index");
        let login = BrokerLogin::from_url("amqp://u:p@h:5672/%2f").unwrap();
        assert_eq!(login.vhost, "/");
        assert_eq!(BrokerLogin::from_url("amqp://u:p@h").unwrap().vhost, "/");
        assert_eq!(
            BrokerLogin::from_url("amqp://u:p@h/").unwrap_err(),
            DefinitionsError::EmptyVhost
        );
        assert_eq!(
            BrokerLogin::from_url("amqp://guest:guest@h:5672/%2f").unwrap_err(),
            DefinitionsError::WellKnownLogin
        );
        // The error never repeats the URL: it holds the password.
        let error = BrokerLogin::from_url("http://u:secret@h/").unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn definitions_create_the_vhost_and_a_user_limited_to_it() {
        let login = BrokerLogin::from_url("amqp://app:pw@h:5672/index").unwrap();
        let value = definitions(
            &Topology::from_config(&Config::default()),
            &login,
            [1, 2, 3, 4],
        );
        assert_eq!(value["vhosts"], json!([{"name": "index"}]));
        assert_eq!(value["users"][0]["name"], "app");
        assert_eq!(
            value["users"][0]["password_hash"],
            password_hash("pw", [1, 2, 3, 4])
        );
        assert_eq!(value["users"][0]["hashing_algorithm"], HASHING_ALGORITHM);
        assert_eq!(value["permissions"][0]["vhost"], "index");
        for kind in ["queues", "exchanges", "bindings"] {
            let items = value[kind].as_array().unwrap();
            assert!(!items.is_empty());
            assert!(items.iter().all(|item| item["vhost"] == "index"), "{kind}");
        }
        assert!(!value.to_string().contains("\"pw\""), "no clear password");
    }

    /// `bus-config/definitions.json`: the default topology with docker-compose.yml's login.
    /// Regenerate it with `REGINDEX_BLESS=1 cargo nextest run -p regindex definitions`.
    #[test]
    fn bus_config_definitions_match_the_topology_and_the_compose_login() {
        let login = BrokerLogin::from_url(&compose_amqp_url()).unwrap();
        assert_ne!(login.vhost, "/", "compose gets its own vhost");
        let generated = definitions(
            &Topology::from_config(&Config::default()),
            &login,
            COMPOSE_SALT,
        );
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        if std::env::var_os("REGINDEX_BLESS").is_some() {
            std::fs::write(BUS_CONFIG_DEFINITIONS, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(BUS_CONFIG_DEFINITIONS).unwrap();
        assert_eq!(on_disk, text, "bus-config/definitions.json is stale");
    }
}
