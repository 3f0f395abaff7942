//! What every phone request leaves behind: the metrics counter by status and model, and one
//! log line `phone fetch` with the MAC, model, file, status, bytes and latency (never the
//! query string, which may carry credentials, nor any header).

use std::time::Duration;

use axum::http::Method;
use axum::response::Response;

use crate::domain::Mac;

/// The device and model a response was for, set by the fetch path on the response.
#[derive(Clone)]
pub(super) struct Served {
    mac: Option<Mac>,
    model: String,
}

/// Marks `r` as served for `mac` (per-device files) and `model`.
pub(super) fn mark(r: &mut Response, mac: Option<&Mac>, model: &str) {
    r.extensions_mut().insert(Served {
        mac: mac.cloned(),
        model: model.to_string(),
    });
}

/// Counts the request and logs its line.
pub(super) fn fetched(
    metrics: &crate::metrics::Metrics,
    method: &Method,
    path: &str,
    r: &Response,
    took: Duration,
) {
    let served = r.extensions().get::<Served>();
    let model = served.map(|s| s.model.as_str()).unwrap_or("-");
    let status = r.status().as_u16();
    metrics.phone_request(status, model);
    let bytes = axum::body::HttpBody::size_hint(r.body())
        .exact()
        .unwrap_or(0);
    let mac = served
        .and_then(|s| s.mac.as_ref())
        .map_or("-", |m| m.as_str());
    // The file name only (a phone's path has no secrets, its query string might), at most
    // 128 characters; borrowed, so a server not logging fetches allocates nothing here.
    let file = path.trim_start_matches('/');
    let file = file
        .char_indices()
        .nth(128)
        .map_or(file, |(i, _)| &file[..i]);
    tracing::info!(
        target: "deskprov::phone::fetch",
        method = %method,
        mac = %mac,
        model = %model,
        file = %file,
        status,
        bytes,
        latency_ms = took.as_secs_f64() * 1000.0,
        "phone fetch"
    );
}

/// The lockout line for a whole address: what the fail2ban filter in `contrib/` matches.
pub(super) fn address_lockout_line(ip: std::net::IpAddr) -> String {
    format!("too many authentication failures from {ip}; locked out")
}

/// The lockout line for one MAC from an address (`for_mac` is ` for <mac>`); not banned.
pub(super) fn pair_lockout_line(ip: std::net::IpAddr, for_mac: &str) -> String {
    format!("too many authentication failures from {ip}{for_mac}; locked out")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// fail2ban's `<ADDR>` (IPv4 or IPv6) as a regex group, the rest of `failregex` as is.
    fn filter() -> regex::Regex {
        let conf = include_str!("../../contrib/fail2ban/filter.d/deskprov.conf");
        let line = conf
            .lines()
            .find_map(|l| l.strip_prefix("failregex = "))
            .expect("a failregex");
        let addr = r"(?P<host>[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]+)";
        regex::Regex::new(&line.replace("<ADDR>", addr)).unwrap()
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines as the server logs them (same target, level and message) in `json` or human form.
    fn logged(json: bool) -> String {
        let buf = Buf::default();
        let b = buf.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || b.clone())
            .with_ansi(false);
        let emit = || {
            let v4: std::net::IpAddr = "192.0.2.7".parse().unwrap();
            let v6: std::net::IpAddr = "2001:db8::9".parse().unwrap();
            tracing::warn!(target: "deskprov::phone::auth", "{}", address_lockout_line(v4));
            tracing::warn!(target: "deskprov::phone::auth", "{}", pair_lockout_line(v4, " for 0004f2000001"));
            tracing::warn!(target: "deskprov::phone::auth", "{}", address_lockout_line(v6));
        };
        if json {
            tracing::subscriber::with_default(builder.json().finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    /// The fetch line names the file without the query string and at most 128 characters
    /// of it (a multi-byte name cut on a character), and `-` for a response to no device.
    #[test]
    fn the_fetch_line_names_the_file_cut_to_128_characters_and_no_query() {
        use crate::metrics::{Metrics, NotifyMetrics, RenderMetrics, StoreMetrics};
        let m = Metrics::new(
            &StoreMetrics::default(),
            &RenderMetrics::default(),
            &NotifyMetrics::default(),
        );
        let buf = Buf::default();
        let b = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || b.clone())
            .with_ansi(false)
            .finish();
        let long = "é".repeat(200);
        tracing::subscriber::with_default(sub, || {
            let mut r = Response::new(axum::body::Body::empty());
            mark(&mut r, None, "yealink-t54w");
            fetched(&m, &Method::GET, &format!("/{long}"), &r, Duration::ZERO);
            let mut r = Response::new(axum::body::Body::empty());
            let mac = Mac::parse("0004f2000001").unwrap();
            mark(&mut r, Some(&mac), "yealink-t54w");
            fetched(&m, &Method::GET, "/0004f2000001.cfg", &r, Duration::ZERO);
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let cut = "é".repeat(128);
        assert!(lines[0].contains(&format!("file={cut} ")), "{}", lines[0]);
        assert!(lines[0].contains("mac=- "), "{}", lines[0]);
        assert!(lines[1].contains("file=0004f2000001.cfg "), "{}", lines[1]);
        assert!(lines[1].contains("mac=0004f2000001 "), "{}", lines[1]);
    }

    #[test]
    fn the_fail2ban_filter_bans_whole_address_lockouts_only() {
        let re = filter();
        for json in [false, true] {
            let text = logged(json);
            let hosts: Vec<&str> = text
                .lines()
                .filter_map(|l| re.captures(l).map(|c| c.name("host").unwrap().as_str()))
                .collect();
            assert_eq!(hosts, ["192.0.2.7", "2001:db8::9"], "{text}");
        }
    }
}
