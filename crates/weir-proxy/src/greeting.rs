//! What a pool tells a client at login: the settings the client starts with and the
//! ParameterStatus messages that announce them. Both follow from the pool's server
//! parameters and the client's startup settings alone, and the clients of one pool
//! nearly all send the same startup packet (one application, one driver), so each
//! pool remembers its last few greetings instead of building the same one again at
//! every login (interning a dozen values and scanning the reported names cost ~9 000
//! instructions a login, an eighth of one).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use weir_wire::build;

use crate::params::ClientParams;
use crate::server::ServerParams;

/// Greetings a pool remembers: enough for a few applications sharing a pool, small
/// enough that a miss is a short scan.
const REMEMBERED: usize = 4;

/// A client's greeting: its starting settings and their announcement.
#[derive(Debug, Clone)]
pub struct Greeting {
    /// The settings the client starts with (shared sets: cloning copies pointers).
    pub params: ClientParams,
    /// One ParameterStatus per server parameter, with the client's own values.
    pub status: Bytes,
}

impl Greeting {
    /// Builds the greeting for these inputs.
    fn build(server: &ServerParams, settings: &[(String, String)], track_extra: &[String]) -> Self {
        let params = ClientParams::from_startup(
            server,
            settings.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            track_extra,
        );
        let mut status = BytesMut::with_capacity(512);
        for (name, value) in server.iter() {
            // What the client asked for at startup, as it will be on every server
            // connection.
            let value = params.reported.get(name).unwrap_or(value);
            build::put_parameter_status(&mut status, name, value);
        }
        Greeting {
            params,
            status: status.freeze(),
        }
    }
}

/// What a greeting was built from.
#[derive(Debug)]
struct Inputs {
    /// Compared by pointer: a pool's server parameters are one `Arc` until a new
    /// login replaces them.
    server: ServerParams,
    settings: Vec<(String, String)>,
    track_extra: Vec<String>,
}

impl Inputs {
    fn matches(
        &self,
        server: &ServerParams,
        settings: &[(String, String)],
        extra: &[String],
    ) -> bool {
        Arc::ptr_eq(&self.server, server) && self.settings == settings && self.track_extra == extra
    }
}

/// One pool's last few greetings, newest last.
#[derive(Debug, Default)]
pub struct Greetings(Mutex<Vec<(Inputs, Greeting)>>);

impl Greetings {
    /// The greeting for a client with these startup `settings`, built on a miss.
    pub fn get(
        &self,
        server: &ServerParams,
        settings: &[(String, String)],
        track_extra: &[String],
    ) -> Greeting {
        let lock = || self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, g)) = lock()
            .iter()
            .rev()
            .find(|(inputs, _)| inputs.matches(server, settings, track_extra))
        {
            return g.clone();
        }
        // Built outside the lock: other logins to the pool need not wait for it.
        let greeting = Greeting::build(server, settings, track_extra);
        let mut remembered = lock();
        if remembered.len() == REMEMBERED {
            remembered.remove(0);
        }
        remembered.push((
            Inputs {
                server: Arc::clone(server),
                settings: settings.to_vec(),
                track_extra: track_extra.to_vec(),
            },
            greeting.clone(),
        ));
        greeting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerParams {
        Arc::new(vec![
            ("application_name".into(), String::new()),
            ("client_encoding".into(), "UTF8".into()),
            ("server_version".into(), "15.0".into()),
        ])
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The status block announces every server parameter once, with the client's own
    /// startup value where it set one.
    #[test]
    fn status_carries_the_clients_values() {
        let g = Greetings::default().get(&server(), &set(&[("application_name", "app")]), &[]);
        let text = String::from_utf8_lossy(&g.status).into_owned();
        assert_eq!(
            g.status.iter().filter(|&&b| b == b'S').count(),
            3,
            "{text:?}"
        );
        assert!(text.contains("application_name\0app\0"), "{text:?}");
        assert!(text.contains("server_version\x0015.0\0"), "{text:?}");
        assert_eq!(g.params.reported.get("application_name"), Some("app"));
    }

    /// A repeated login gets the remembered greeting (the same shared sets); different
    /// settings, or new server parameters, get their own.
    #[test]
    fn remembers_by_inputs() {
        let greetings = Greetings::default();
        let (s, app) = (server(), set(&[("application_name", "app")]));
        let a = greetings.get(&s, &app, &[]);
        let b = greetings.get(&s, &app, &[]);
        assert!(Arc::ptr_eq(&a.params.reported, &b.params.reported));
        assert_eq!(a.status, b.status);

        let other = greetings.get(&s, &set(&[("application_name", "other")]), &[]);
        assert_eq!(other.params.reported.get("application_name"), Some("other"));
        let renewed = greetings.get(&server(), &app, &[]);
        assert_eq!(
            renewed.status, a.status,
            "same values, new Arc: rebuilt alike"
        );

        let tracked = greetings.get(
            &s,
            &set(&[("extra_float_digits", "3")]),
            &["lock_timeout".into()],
        );
        assert!(tracked
            .params
            .extra_names
            .iter()
            .any(|n| &**n == "lock_timeout"));
    }

    /// At most REMEMBERED greetings are kept, whatever the variety of logins.
    #[test]
    fn bounded() {
        let greetings = Greetings::default();
        let s = server();
        for i in 0..3 * REMEMBERED {
            let name = format!("app{i}");
            let g = greetings.get(&s, &set(&[("application_name", &name)]), &[]);
            assert_eq!(
                g.params.reported.get("application_name"),
                Some(name.as_str())
            );
        }
        assert_eq!(greetings.0.lock().unwrap().len(), REMEMBERED);
    }
}
