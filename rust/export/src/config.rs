//! Where and how an [`Exporter`](crate::Exporter) sends: arguments first,
//! then OpenTelemetry's environment variables, then OTLP/HTTP's defaults.

use std::time::Duration;

use pykregistry_core::Value;

/// The exporter's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The URL spans are sent to (the traces endpoint itself).
    pub endpoint: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// How long one batch may take to send, retries included.
    pub timeout: Duration,
    /// The resource's attributes (`service.name` among them).
    pub resource: Vec<(String, Value)>,
    /// Spans held at most while waiting to be sent; more are dropped.
    pub queue_size: usize,
    /// Spans sent at most in one request.
    pub batch_size: usize,
    /// How long a span waits at most before its batch is sent.
    pub delay: Duration,
}

/// OTLP/HTTP's default traces endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/traces";

const TRACES_PATH: &str = "/v1/traces";

impl Config {
    /// Settings from arguments, falling back on the environment as `env`
    /// reads it (`|k| std::env::var(k).ok()` in a process):
    ///
    /// - the endpoint: `endpoint` (a base URL to which `/v1/traces` is
    ///   appended, unless its path already ends so), else
    ///   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else
    ///   `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended, else
    ///   `http://localhost:4318/v1/traces`;
    /// - headers: `OTEL_EXPORTER_OTLP_HEADERS`, then
    ///   `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, then `headers`, a later value
    ///   replacing an earlier one of the same name;
    /// - the resource: `telemetry.sdk.*`, then `OTEL_RESOURCE_ATTRIBUTES`,
    ///   `OTEL_SERVICE_NAME`, `resource_attributes` and `service_name`, a
    ///   later value replacing an earlier one; `service.name` is
    ///   `unknown_service` if none gives it.
    #[must_use]
    pub fn new(
        endpoint: Option<&str>,
        headers: Vec<(String, String)>,
        timeout: Duration,
        service_name: Option<&str>,
        resource_attributes: Vec<(String, Value)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Config {
        let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let endpoint = match (endpoint, nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => traces_url(base),
            (None, Some(url)) => url.trim().to_owned(),
            (None, None) => nonempty("OTEL_EXPORTER_OTLP_ENDPOINT").map_or_else(
                || DEFAULT_ENDPOINT.to_owned(),
                |base| format!("{}{TRACES_PATH}", base.trim().trim_end_matches('/')),
            ),
        };
        let mut all_headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            for (k, v) in parse_key_values(&env(var).unwrap_or_default()) {
                upsert(&mut all_headers, k, v, true);
            }
        }
        for (k, v) in headers {
            upsert(&mut all_headers, k, v, true);
        }
        let mut resource: Vec<(String, Value)> = vec![
            (
                "telemetry.sdk.name".into(),
                Value::Str("pykregistry".into()),
            ),
            ("telemetry.sdk.language".into(), Value::Str("python".into())),
            (
                "telemetry.sdk.version".into(),
                Value::Str(env!("CARGO_PKG_VERSION").into()),
            ),
        ];
        for (k, v) in parse_key_values(&env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default()) {
            upsert(&mut resource, k, Value::Str(v.into()), false);
        }
        if let Some(name) = nonempty("OTEL_SERVICE_NAME") {
            upsert(
                &mut resource,
                "service.name".into(),
                Value::Str(name.into()),
                false,
            );
        }
        for (k, v) in resource_attributes {
            upsert(&mut resource, k, v, false);
        }
        if let Some(name) = service_name {
            upsert(
                &mut resource,
                "service.name".into(),
                Value::Str(name.into()),
                false,
            );
        }
        if !resource.iter().any(|(k, _)| k == "service.name") {
            resource.push(("service.name".into(), Value::Str("unknown_service".into())));
        }
        Config {
            endpoint,
            headers: all_headers,
            timeout,
            resource,
            queue_size: 2048,
            batch_size: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// The traces URL of a base URL: `/v1/traces` appended, unless its path
/// already ends with it.
fn traces_url(base: &str) -> String {
    let base = base.trim();
    if base.trim_end_matches('/').ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{}{TRACES_PATH}", base.trim_end_matches('/'))
    }
}

fn upsert<V>(list: &mut Vec<(String, V)>, key: String, value: V, ignore_case: bool) {
    let same = |k: &String| {
        if ignore_case {
            k.eq_ignore_ascii_case(&key)
        } else {
            *k == key
        }
    };
    if let Some(slot) = list.iter_mut().find(|(k, _)| same(k)) {
        slot.1 = value;
    } else {
        list.push((key, value));
    }
}

/// `k=v,k2=v2` as W3C baggage writes it and the `OTEL_*` variables use it:
/// keys and values trimmed and percent-decoded; entries without `=` or with
/// an empty key skipped.
#[must_use]
pub fn parse_key_values(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|item| {
            let (k, v) = item.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(endpoint: Option<&str>, service_name: Option<&str>, env: &[(&str, &str)]) -> Config {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::new(
            endpoint,
            vec![],
            Duration::from_secs(10),
            service_name,
            vec![],
            |k| env.get(k).cloned(),
        )
    }

    fn resource(c: &Config, key: &str) -> Option<String> {
        c.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.to_string())
    }

    #[test]
    fn endpoint_precedence() {
        assert_eq!(config(None, None, &[]).endpoint, DEFAULT_ENDPOINT);
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")];
        assert_eq!(
            config(None, None, &base).endpoint,
            "http://c:4318/v1/traces"
        );
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
        ];
        assert_eq!(config(None, None, &both).endpoint, "http://t:1/custom");
        assert_eq!(
            config(Some("http://a:2"), None, &both).endpoint,
            "http://a:2/v1/traces"
        );
        assert_eq!(
            config(Some("http://a:2/v1/traces"), None, &both).endpoint,
            "http://a:2/v1/traces"
        );
    }

    #[test]
    fn headers_are_url_decoded_and_arguments_win() {
        let env: HashMap<&str, &str> = [(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20abc, x-team = a%2Cb ,junk,=v",
        )]
        .into_iter()
        .collect();
        let c = Config::new(
            None,
            vec![("X-Team".into(), "mine".into())],
            Duration::from_secs(1),
            None,
            vec![],
            |k| env.get(k).map(|v| (*v).to_owned()),
        );
        assert_eq!(
            c.headers,
            vec![
                ("Authorization".to_owned(), "Bearer abc".to_owned()),
                ("x-team".to_owned(), "mine".to_owned()),
            ]
        );
    }

    #[test]
    fn service_name_precedence() {
        assert_eq!(
            resource(&config(None, None, &[]), "service.name").as_deref(),
            Some("unknown_service")
        );
        let env = [
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=a,deployment.environment=prod%20eu",
            ),
            ("OTEL_SERVICE_NAME", "b"),
        ];
        let c = config(None, None, &env);
        assert_eq!(resource(&c, "service.name").as_deref(), Some("b"));
        assert_eq!(
            resource(&c, "deployment.environment").as_deref(),
            Some("prod eu")
        );
        assert_eq!(
            resource(&config(None, Some("c"), &env), "service.name").as_deref(),
            Some("c")
        );
        assert_eq!(
            resource(&c, "telemetry.sdk.name").as_deref(),
            Some("pykregistry")
        );
    }

    #[test]
    fn percent_decoding_leaves_bad_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
