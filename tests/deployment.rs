//! `docker-compose.yml` and `k8s/` cannot run on the machines this project is built on (no
//! Docker engine, no cluster), so this test keeps them honest: every service binary they run
//! exists in the image, every `SM_*` variable names a real setting and parses, every metrics
//! port matches the service's configured address, and the stack's servers are all there.

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    // At run time (set by cargo test): a test binary built in another clone sharing the
    // target dir must read this clone's files.
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test")).join("..")
}

/// The services the image runs, with their configuration defaults and a loader that type-checks
/// an environment the way the binary does at start.
struct Service {
    binary: &'static str,
    defaults: Json,
    load: fn(&HashMap<String, String>) -> Result<(), String>,
}

fn services() -> Vec<Service> {
    vec![
        Service {
            binary: "passthrough",
            defaults: serde_json::to_value(sm_passthrough::PassthroughConfig::default()).unwrap(),
            load: |env| {
                let config: sm_passthrough::PassthroughConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.kafka.validate()
            },
        },
        Service {
            binary: "ingestion",
            defaults: serde_json::to_value(sm_ingestion::IngestionConfig::default()).unwrap(),
            load: |env| {
                let config: sm_ingestion::IngestionConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.kafka.validate()?;
                config.ingestion.validate()
            },
        },
        Service {
            binary: "anomaly",
            defaults: serde_json::to_value(sm_anomaly::AnomalyConfig::default()).unwrap(),
            load: |env| {
                let config: sm_anomaly::AnomalyConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.kafka.validate()?;
                config.anomaly.validate()
            },
        },
        Service {
            binary: "drift",
            defaults: serde_json::to_value(sm_drift::DriftAgentConfig::default()).unwrap(),
            load: |env| {
                let config: sm_drift::DriftAgentConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.kafka.validate()
            },
        },
        Service {
            binary: "prediction",
            defaults: serde_json::to_value(sm_prediction::PredictionConfig::default()).unwrap(),
            load: |env| {
                let config: sm_prediction::PredictionConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.kafka.validate()?;
                config.artifacts.validate().map_err(|e| e.to_string())?;
                config.prediction.validate()
            },
        },
        Service {
            binary: "projector",
            defaults: serde_json::to_value(sm_projector::ProjectorConfig::default()).unwrap(),
            load: |env| {
                let config: sm_projector::ProjectorConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.kafka.validate()
            },
        },
        Service {
            binary: "query",
            defaults: serde_json::to_value(sm_query::QueryConfig::default()).unwrap(),
            load: |env| {
                let config: sm_query::QueryConfig =
                    sm_telemetry::config::load_from(None, env).map_err(|e| e.to_string())?;
                config.validate()
            },
        },
    ]
}

/// Checks one deployed service: its env against the configuration, its port against its
/// metrics address. Returns the container port of `/metrics`.
fn check_service(place: &str, service: &Service, env: &HashMap<String, String>) -> u16 {
    for name in env.keys().filter(|k| k.starts_with("SM_")) {
        let path: Vec<String> = name["SM_".len()..].split("__").map(str::to_ascii_lowercase).collect();
        assert_eq!(path.len(), 2, "{place}: {name} is not SM_<SECTION>__<FIELD>");
        let section = service
            .defaults
            .get(&path[0])
            .unwrap_or_else(|| panic!("{place}: {name}: {} has no section `{}`", service.binary, path[0]));
        assert!(section.get(&path[1]).is_some(), "{place}: {name}: section `{}` has no field `{}`", path[0], path[1]);
    }
    (service.load)(env).unwrap_or_else(|e| panic!("{place}: configuration does not load: {e}"));
    let http = env
        .get("SM_TELEMETRY__HTTP_ADDR")
        .unwrap_or_else(|| panic!("{place}: set SM_TELEMETRY__HTTP_ADDR so /metrics is reachable"));
    assert!(http.starts_with("0.0.0.0:"), "{place}: {http} is not reachable from outside the container");
    http.rsplit(':').next().unwrap().parse().unwrap()
}

/// Settings whose value is a credential nobody may commit: compose takes them from the
/// environment of whoever runs it (`${NAME:?message}`), k8s/ from a Secret (`secretKeyRef`).
const SECRET_SETTINGS: &[&str] = &["SM_AUTH__BOOTSTRAP_KEY"];

/// What a value provided at deploy time (a k8s Secret, a compose `${NAME:?message}`) stands
/// for in the checks: something of the setting's shape, so the configuration still loads and
/// validates as it will with the real value.
fn stand_in(name: &str) -> String {
    match name {
        // An API key, smk_<16 hex>_<64 hex>, as `smctl keys generate` prints.
        "SM_AUTH__BOOTSTRAP_KEY" => format!("smk_{}_{}", "0".repeat(16), "0".repeat(64)),
        _ => "from-k8s".into(),
    }
}

/// A compose environment value: a literal, or one variable of the shell that runs compose,
/// required with a message (`${NAME:?message}`) so that a missing one stops `up` with advice
/// instead of starting the service with an empty setting. Returns the value to check.
fn compose_value(place: &str, name: &str, raw: &str) -> String {
    if !raw.contains('$') {
        return raw.to_owned();
    }
    let inner = raw
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{place}: {name}: only a whole-value ${{NAME:?message}} is supported ({raw})"));
    let (variable, message) =
        inner.split_once(":?").unwrap_or_else(|| panic!("{place}: {name}: {raw} must be required, ${{NAME:?message}}"));
    assert!(
        !variable.is_empty() && variable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{place}: {name}: {variable:?} is not a variable name"
    );
    assert!(!message.trim().is_empty(), "{place}: {name}: say how to provide {variable} in ${{{variable}:?message}}");
    assert!(!message.contains(['$', '{', '}']), "{place}: {name}: keep the message of {raw} plain text");
    stand_in(name)
}

fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

#[test]
fn docker_compose_matches_the_code() {
    let compose: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("docker-compose.yml")).unwrap()).unwrap();
    let entries = compose["services"].as_mapping().expect("services");
    let names: Vec<String> = entries.keys().map(text).collect();
    for server in ["kafka", "postgres", "redis", "minio"] {
        assert!(names.iter().any(|n| n == server), "docker-compose.yml lacks the {server} server of the local stack");
    }
    let kafka_env = &entries[&Yaml::from("kafka")]["environment"];
    let listeners = text(&kafka_env["KAFKA_LISTENERS"]);
    for service in services() {
        let (name, entry) = entries
            .iter()
            .find(|(_, e)| {
                e["command"].as_sequence().and_then(|c| c.first()).map(text).as_deref() == Some(service.binary)
            })
            .unwrap_or_else(|| panic!("docker-compose.yml does not run {}", service.binary));
        let place = format!("docker-compose.yml service {}", text(name));
        assert!(entry.get("build").is_some(), "{place}: built from the Dockerfile");
        let raw: HashMap<String, String> = entry["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{place}: environment must be a mapping"))
            .iter()
            .map(|(k, v)| (text(k), text(v)))
            .collect();
        for name in SECRET_SETTINGS {
            if let Some(value) = raw.get(*name) {
                assert!(
                    value.starts_with("${"),
                    "{place}: {name} is a credential: take it from the environment, ${{{name}:?message}}"
                );
            }
        }
        if service.binary == "query" {
            assert!(
                raw.contains_key("SM_AUTH__BOOTSTRAP_KEY"),
                "{place}: no SM_AUTH__BOOTSTRAP_KEY, so nobody can make the first key"
            );
        }
        let env: HashMap<String, String> = raw.iter().map(|(k, v)| (k.clone(), compose_value(&place, k, v))).collect();
        let port = check_service(&place, &service, &env);
        let published: Vec<String> =
            entry["ports"].as_sequence().map(|p| p.iter().map(text).collect()).unwrap_or_default();
        assert!(
            published.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "{place}: metrics port {port} not published ({published:?})"
        );
        let bootstrap = &env["SM_KAFKA__BOOTSTRAP_SERVERS"];
        let (host, kafka_port) = bootstrap.split_once(':').unwrap();
        assert!(names.iter().any(|n| n == host), "{place}: bootstrap host {host} is not a compose service");
        assert!(
            listeners.contains(&format!(":{kafka_port}")),
            "{place}: kafka does not listen on {kafka_port} ({listeners})"
        );
        for url_var in ["SM_POSTGRES__URL", "SM_REDIS__URL"] {
            if let Some(url) = env.get(url_var) {
                // scheme://[user[:password]@]host[:port][/path]; the path is optional (redis://redis:6379).
                let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                let authority = rest.split(['/', '?', '#']).next().unwrap();
                let host = authority.rsplit('@').next().unwrap().split(':').next().unwrap();
                assert!(names.iter().any(|n| n == host), "{place}: {url_var} host {host} is not a compose service");
            }
        }
    }
}

/// The k8s/ workload (file, manifest) whose pod runs a container named `container`.
fn workload_running<'m>(manifests: &'m [(String, Yaml)], container: &str) -> (&'m String, &'m Yaml) {
    manifests
        .iter()
        .find(|(_, m)| {
            m["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .is_some_and(|c| c.iter().any(|c| c.get("name").map(text).as_deref() == Some(container)))
        })
        .map(|(file, m)| (file, m))
        .unwrap_or_else(|| panic!("k8s/ runs no {container} container"))
}

/// Every manifest in `k8s/*.yaml`, with the file it came from.
fn k8s_manifests() -> Vec<(String, Yaml)> {
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(root().join("k8s")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text_of_file = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text_of_file) {
            let manifest = <Yaml as serde::Deserialize>::deserialize(document).unwrap();
            manifests.push((path.display().to_string(), manifest));
        }
    }
    assert!(!manifests.is_empty(), "k8s/ holds no manifests");
    manifests
}

#[test]
fn kubernetes_manifests_match_the_code() {
    let mut containers = Vec::new();
    for (file, manifest) in k8s_manifests() {
        let kind = manifest.get("kind").map(text).unwrap_or_default();
        if kind == "StatefulSet" || kind == "Deployment" {
            for container in manifest["spec"]["template"]["spec"]["containers"].as_sequence().unwrap() {
                containers.push((file.clone(), container.clone()));
            }
        }
    }
    for server in ["kafka", "postgres", "redis", "minio"] {
        assert!(containers.iter().any(|(_, c)| text(&c["name"]) == server), "k8s/ lacks the {server} server");
    }
    for service in services() {
        let (file, container) = containers
            .iter()
            .find(|(_, c)| {
                c["command"].as_sequence().and_then(|c| c.first()).map(text).as_deref() == Some(service.binary)
            })
            .unwrap_or_else(|| panic!("k8s/ does not run {}", service.binary));
        let place = format!("{file} container {}", text(&container["name"]));
        for e in container["env"].as_sequence().unwrap() {
            let name = text(&e["name"]);
            if SECRET_SETTINGS.contains(&name.as_str()) {
                assert!(
                    e.get("value").is_none() && e["valueFrom"].get("secretKeyRef").is_some(),
                    "{place}: {name} is a credential: take it from a Secret (valueFrom.secretKeyRef)"
                );
            }
        }
        let env: HashMap<String, String> = container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            // Values from the downward API or secrets are checked by name with a stand-in.
            .map(|e| {
                let name = text(&e["name"]);
                let value = e.get("value").map(text).unwrap_or_else(|| stand_in(&name));
                (name, value)
            })
            .collect();
        if service.binary == "query" {
            assert!(
                env.contains_key("SM_AUTH__BOOTSTRAP_KEY"),
                "{place}: no SM_AUTH__BOOTSTRAP_KEY, so nobody can make the first key"
            );
        }
        let port = check_service(&place, &service, &env);
        let ports: Vec<u16> = container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| text(&p["containerPort"]).parse().unwrap())
            .collect();
        assert!(ports.contains(&port), "{place}: containerPort {port} not declared");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(text(&container[probe]["httpGet"]["path"]), path, "{place}: {probe}");
            // A probe names its port by number or by the container port's name.
            let probe_port = text(&container[probe]["httpGet"]["port"]);
            let resolved = probe_port.parse::<u16>().ok().or_else(|| {
                container["ports"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|p| p.get("name").map(text).as_deref() == Some(&probe_port))
                    .map(|p| text(&p["containerPort"]).parse().unwrap())
            });
            assert_eq!(resolved, Some(port), "{place}: {probe} port {probe_port}");
        }
    }
}

/// The persistence settings of a `redis-server` command line, asserted to keep the duplicate
/// windows (README, "Duplicates"): append-only on, fsync `everysec` or `always`, no eviction.
/// Returns `(appendfsync, dir)`.
fn redis_persistence(place: &str, args: &[String]) -> (String, String) {
    let value = |flag: &str| {
        let at = args.iter().position(|a| a == flag);
        at.and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("{place}: redis-server has no {flag} ({args:?})"))
    };
    assert_eq!(args.first().map(String::as_str), Some("redis-server"), "{place}: runs redis-server");
    assert_eq!(value("--appendonly"), "yes", "{place}: Redis must keep an append-only file");
    let fsync = value("--appendfsync");
    assert!(["everysec", "always"].contains(&fsync.as_str()), "{place}: --appendfsync {fsync} loses claims at will");
    assert_eq!(value("--maxmemory-policy"), "noeviction", "{place}: an evicted claim lets its duplicate through");
    (fsync, value("--dir"))
}

#[test]
fn redis_persists_the_duplicate_windows_everywhere() {
    // docker-compose.yml: the data dir is a named volume.
    let compose: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("docker-compose.yml")).unwrap()).unwrap();
    let redis = &compose["services"]["redis"];
    let args: Vec<String> = redis["command"].as_sequence().expect("redis command as a list").iter().map(text).collect();
    let (compose_fsync, dir) = redis_persistence("docker-compose.yml redis", &args);
    let mounts: Vec<String> = redis["volumes"].as_sequence().map(|v| v.iter().map(text).collect()).unwrap_or_default();
    let volume = mounts
        .iter()
        .find_map(|m| m.strip_suffix(&format!(":{dir}")))
        .unwrap_or_else(|| panic!("docker-compose.yml redis: no volume on {dir} ({mounts:?})"));
    assert!(
        compose["volumes"].get(volume).is_some(),
        "docker-compose.yml redis: {volume} is not a named volume, so `down` would lose the windows"
    );

    // k8s/: a StatefulSet whose data dir is a volumeClaimTemplate.
    let manifests = k8s_manifests();
    let (file, statefulset) = workload_running(&manifests, "redis");
    assert_eq!(text(&statefulset["kind"]), "StatefulSet", "{file}: redis needs a volumeClaimTemplate");
    let container = statefulset["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| text(&c["name"]) == "redis")
        .unwrap();
    let args: Vec<String> = container["args"].as_sequence().expect("redis args").iter().map(text).collect();
    let (k8s_fsync, dir) = redis_persistence(&format!("{file} redis"), &args);
    let claim = container["volumeMounts"]
        .as_sequence()
        .and_then(|mounts| mounts.iter().find(|m| text(&m["mountPath"]) == dir))
        .map(|m| text(&m["name"]))
        .unwrap_or_else(|| panic!("{file} redis: nothing mounted on {dir}"));
    let templates: Vec<String> = statefulset["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .map(|t| t.iter().map(|t| text(&t["metadata"]["name"])).collect())
        .unwrap_or_default();
    assert!(templates.contains(&claim), "{file} redis: {dir} is volume {claim}, not a claim ({templates:?})");

    // deploy/local/stack: the redis-server line, with the script's REDIS_FSYNC.
    let script = std::fs::read_to_string(root().join("deploy/local/stack")).unwrap().replace("\\\n", " ");
    let fsync_setting = script
        .lines()
        .find_map(|l| l.strip_prefix("REDIS_FSYNC="))
        .expect("deploy/local/stack sets REDIS_FSYNC")
        .trim()
        .to_owned();
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("redis-server "))
        .expect("deploy/local/stack starts redis-server");
    let args: Vec<String> = line
        .split_whitespace()
        .take_while(|a| !a.starts_with('<'))
        .map(|a| a.trim_matches(['"', '\'']).replace("$REDIS_FSYNC", &fsync_setting))
        .collect();
    let (local_fsync, _) = redis_persistence("deploy/local/stack", &args);

    assert_eq!(compose_fsync, local_fsync, "docker-compose.yml and deploy/local/stack fsync Redis differently");
    assert_eq!(k8s_fsync, local_fsync, "k8s/ and deploy/local/stack fsync Redis differently");
}

/// The roles of row-level security, as every stack creates them: sm_reader (what the query
/// service may do, granted by the projector's and the registry's migrations) and sm_query (the
/// query service's login role, a member of it that owns nothing). compose mounts
/// deploy/postgres/init-roles.sh into the init directory and the SQL beside it, k8s/ holds both
/// in a ConfigMap, and they must not drift apart; the query service, and only it, logs in as
/// sm_query.
#[test]
fn postgres_creates_the_query_roles_everywhere() {
    const INITDB: &str = "/docker-entrypoint-initdb.d/";
    const SQL_AT: &str = "/etc/sm/init-roles.sql";
    let sql_file = std::fs::read_to_string(root().join("deploy/postgres/init-roles.sql")).unwrap();
    let script = std::fs::read_to_string(root().join("deploy/postgres/init-roles.sh")).unwrap();
    let sql: String = sql_file.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    for needed in [
        "CREATE ROLE sm_reader NOLOGIN",
        "GRANT sm_reader TO sm;",
        "CREATE ROLE sm_query",
        "NOBYPASSRLS PASSWORD :'query_password'",
        "GRANT sm_reader TO sm_query;",
    ] {
        assert!(sql.contains(needed), "deploy/postgres/init-roles.sql lacks {needed:?}");
    }
    assert!(
        script.contains(&format!("-f {SQL_AT}")) && script.contains("query_password=\"$SM_QUERY_DB_PASSWORD\""),
        "deploy/postgres/init-roles.sh does not run {SQL_AT} with SM_QUERY_DB_PASSWORD"
    );
    let user = |url: &str| url.trim_start_matches("postgres://").split(':').next().unwrap_or_default().to_owned();

    // docker-compose.yml: the script into the init directory, the SQL where it reads it.
    let compose: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("docker-compose.yml")).unwrap()).unwrap();
    let postgres = &compose["services"]["postgres"];
    assert_eq!(
        text(&postgres["environment"]["POSTGRES_USER"]),
        "sm",
        "docker-compose.yml postgres: the SQL grants to sm"
    );
    assert!(
        !text(&postgres["environment"]["SM_QUERY_DB_PASSWORD"]).is_empty(),
        "docker-compose.yml postgres: no SM_QUERY_DB_PASSWORD for init-roles.sh"
    );
    let mounts: Vec<String> =
        postgres["volumes"].as_sequence().map(|v| v.iter().map(text).collect()).unwrap_or_default();
    for (file, target) in [
        ("./deploy/postgres/init-roles.sh:", format!(":{INITDB}")),
        ("./deploy/postgres/init-roles.sql:", format!(":{SQL_AT}")),
    ] {
        assert!(
            mounts.iter().any(|m| m.starts_with(file) && m.contains(&target)),
            "docker-compose.yml postgres: {file} is not mounted at {target} ({mounts:?})"
        );
    }
    for service in services() {
        let (_, entry) = compose["services"]
            .as_mapping()
            .unwrap()
            .iter()
            .find(|(_, e)| {
                e["command"].as_sequence().and_then(|c| c.first()).map(text).as_deref() == Some(service.binary)
            })
            .unwrap();
        let Some(url) = entry["environment"]["SM_POSTGRES__URL"].as_str() else { continue };
        let expected = if service.binary == "query" { "sm_query" } else { "sm" };
        assert_eq!(user(url), expected, "docker-compose.yml {}: logs in to PostgreSQL as", service.binary);
    }

    // k8s/: a ConfigMap with the same two files, mounted likewise, executable.
    let manifests = k8s_manifests();
    let (file, statefulset) = workload_running(&manifests, "postgres");
    let pod = &statefulset["spec"]["template"]["spec"];
    let container = pod["containers"].as_sequence().unwrap().iter().find(|c| text(&c["name"]) == "postgres").unwrap();
    let env = |container: &Yaml, name: &str| -> Option<Yaml> {
        container["env"].as_sequence().unwrap().iter().find(|e| text(&e["name"]) == name).cloned()
    };
    assert_eq!(
        env(container, "POSTGRES_USER").map(|e| text(&e["value"])).as_deref(),
        Some("sm"),
        "{file} postgres: the SQL grants to sm"
    );
    let secret = |name: &str, key: &str| -> String {
        manifests
            .iter()
            .find(|(_, m)| m.get("kind").map(text).as_deref() == Some("Secret") && text(&m["metadata"]["name"]) == name)
            .map(|(_, m)| text(&m["stringData"][key]))
            .unwrap_or_default()
    };
    let password = env(container, "SM_QUERY_DB_PASSWORD")
        .unwrap_or_else(|| panic!("{file} postgres: no SM_QUERY_DB_PASSWORD for init-roles.sh"));
    let from = &password["valueFrom"]["secretKeyRef"];
    assert!(
        !secret(&text(&from["name"]), &text(&from["key"])).is_empty(),
        "{file} postgres: SM_QUERY_DB_PASSWORD's Secret"
    );
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    for (key, at) in [("10-init-roles.sh", format!("{INITDB}10-init-roles.sh")), ("init-roles.sql", SQL_AT.to_owned())]
    {
        let mount = mounts
            .iter()
            .find(|m| text(&m["mountPath"]) == at)
            .unwrap_or_else(|| panic!("{file} postgres: nothing mounted at {at}"));
        assert_eq!(text(&mount["subPath"]), key, "{file} postgres: {at}");
        let volume = pod["volumes"]
            .as_sequence()
            .and_then(|volumes| volumes.iter().find(|v| text(&v["name"]) == text(&mount["name"])))
            .unwrap_or_else(|| panic!("{file} postgres: no volume {}", text(&mount["name"])));
        assert_eq!(volume["configMap"]["defaultMode"].as_u64(), Some(0o755), "{file}: the script must be executable");
        let config_map = text(&volume["configMap"]["name"]);
        let data = manifests
            .iter()
            .find(|(_, m)| {
                m.get("kind").map(text).as_deref() == Some("ConfigMap") && text(&m["metadata"]["name"]) == config_map
            })
            .map(|(_, m)| m["data"].clone())
            .unwrap_or_else(|| panic!("k8s/ has no ConfigMap {config_map}"));
        let source = if key.ends_with(".sh") { &script } else { &sql_file };
        assert_eq!(
            data.get(key).map(text).as_deref(),
            Some(source.as_str()),
            "ConfigMap {config_map} key {key} differs from deploy/postgres/"
        );
    }
    for service in services() {
        let (file, deployment) = workload_running(&manifests, service.binary);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let Some(url) = env(container, "SM_POSTGRES__URL") else { continue };
        let from = &url["valueFrom"]["secretKeyRef"];
        let url = secret(&text(&from["name"]), &text(&from["key"]));
        let expected = if service.binary == "query" { "sm_query" } else { "sm" };
        assert_eq!(user(&url), expected, "{file} {}: logs in to PostgreSQL as", service.binary);
    }
}

/// deploy/k8s-secured, the k8s/ stack with Kafka secured: every service over SASL_SSL as the
/// principal of deploy/kafka/access named after it, its password from the Secret the access
/// sidecar applies; the broker's only reachable listener SASL_SSL under StandardAuthorizer;
/// the sidecar's ConfigMap the same text as the access file and KafkaAccess.java.
#[test]
fn the_secured_kubernetes_overlay_gives_every_service_its_kafka_principal() {
    let dir = root().join("deploy/k8s-secured");
    let read = |file: &str| -> Vec<Yaml> {
        let text_of_file = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        serde_yaml::Deserializer::from_str(&text_of_file)
            .map(|d| <Yaml as serde::Deserialize>::deserialize(d).unwrap())
            .collect()
    };
    let kustomization = &read("kustomization.yaml")[0];
    let listed = |key: &str| -> Vec<String> {
        kustomization[key]
            .as_sequence()
            .map(|v| v.iter().map(|e| if e.is_string() { text(e) } else { text(&e["path"]) }).collect())
            .unwrap_or_default()
    };
    assert!(listed("resources").contains(&"../../k8s".to_owned()), "the overlay builds on k8s/");
    let patches = listed("patches");
    let access = std::fs::read_to_string(root().join("deploy/kafka/access")).unwrap();
    let principals: Vec<&str> = access
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let env_of = |container: &Yaml| -> HashMap<String, Yaml> {
        container["env"].as_sequence().unwrap().iter().map(|e| (text(&e["name"]), e.clone())).collect()
    };

    // The broker: SASL_SSL is the one listener off the loopback.
    let kafka = read("kafka.yaml");
    assert!(patches.contains(&"kafka.yaml".to_owned()), "kustomization.yaml does not patch the broker");
    let statefulset = kafka.iter().find(|m| text(&m["kind"]) == "StatefulSet").unwrap();
    let pod = &statefulset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    let broker = env_of(containers.iter().find(|c| text(&c["name"]) == "kafka").unwrap());
    let value = |env: &HashMap<String, Yaml>, name: &str| env.get(name).map(|e| text(&e["value"])).unwrap_or_default();
    let listeners = value(&broker, "KAFKA_LISTENERS");
    for listener in listeners.split(',') {
        assert!(
            listener.starts_with("SASL_SSL://:") || listener.contains("://127.0.0.1:"),
            "deploy/k8s-secured/kafka.yaml: {listener} is reachable from other pods without SASL_SSL"
        );
    }
    let secure_port = listeners.split(',').find_map(|l| l.strip_prefix("SASL_SSL://:")).expect("a SASL_SSL listener");
    assert_eq!(
        value(&broker, "KAFKA_AUTHORIZER_CLASS_NAME"),
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    );
    assert_eq!(value(&broker, "KAFKA_SASL_ENABLED_MECHANISMS"), "SCRAM-SHA-512");
    let sidecar = containers.iter().find(|c| text(&c["name"]) == "access").expect("the access sidecar");
    let command: String = sidecar["command"].as_sequence().unwrap().iter().map(text).collect::<Vec<_>>().join(" ");
    assert!(command.contains("KafkaAccess.java 127.0.0.1:9092"), "the sidecar applies the access file: {command}");

    // Its ConfigMap: the same files.
    let config_map = &read("kafka-access.yaml")[0];
    assert_eq!(text(&config_map["data"]["access"]), access, "kafka-access.yaml differs from deploy/kafka/access");
    let program = std::fs::read_to_string(root().join("deploy/local/KafkaAccess.java")).unwrap();
    assert_eq!(
        text(&config_map["data"]["KafkaAccess.java"]),
        program,
        "kafka-access.yaml differs from KafkaAccess.java"
    );

    // Every service: its own principal, over SASL_SSL, to that port.
    let manifests = k8s_manifests();
    for service in services() {
        let file = format!("{}.yaml", service.binary);
        assert!(patches.contains(&file), "kustomization.yaml does not patch {}", service.binary);
        let patch = &read(&file)[0];
        let container = patch["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| text(&c["name"]) == service.binary)
            .unwrap_or_else(|| panic!("{file}: no container {}", service.binary));
        let env = env_of(container);
        let place = format!("deploy/k8s-secured/{file}");
        assert_eq!(value(&env, "SM_KAFKA__BOOTSTRAP_SERVERS"), format!("kafka:{secure_port}"), "{place}");
        assert_eq!(value(&env, "SM_KAFKA__SECURITY_PROTOCOL"), "sasl_ssl", "{place}");
        assert_eq!(value(&env, "SM_KAFKA__SASL_MECHANISM"), "SCRAM-SHA-512", "{place}");
        let username = value(&env, "SM_KAFKA__SASL_USERNAME");
        assert_eq!(username, service.binary, "{place}: its own principal");
        assert!(
            principals.contains(&username.as_str()),
            "{place}: {username} is not a principal of deploy/kafka/access"
        );
        let password = &env.get("SM_KAFKA__SASL_PASSWORD").unwrap_or_else(|| panic!("{place}: no password"))["valueFrom"]
            ["secretKeyRef"];
        assert_eq!((text(&password["name"]), text(&password["key"])), ("kafka-principals".to_owned(), username));
        assert!(!value(&env, "SM_KAFKA__SSL_CA_LOCATION").is_empty(), "{place}: no CA for the broker's certificate");
        let (_, base) = workload_running(&manifests, service.binary);
        assert_eq!(text(&patch["kind"]), text(&base["kind"]), "{place}: patches a {}", text(&base["kind"]));
    }
}

#[test]
fn the_image_holds_every_service_binary() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from=builder /out/"))
        .filter_map(|l| l.trim_start_matches("COPY --from=builder /out/").split_whitespace().next())
        .collect();
    for service in services() {
        assert!(copied.contains(&service.binary), "Dockerfile does not copy {}", service.binary);
    }
    assert!(copied.contains(&"smctl"), "Dockerfile does not copy smctl");
}
