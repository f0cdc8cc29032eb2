//! Layered settings for both binaries: built-in defaults, then a TOML file, then
//! environment variables with a prefix (`__` between a section and its key). Each binary
//! keeps its own settings struct; this module only loads and checks.

use serde::de::DeserializeOwned;
use std::path::Path;

/// Loads `T` from its `Default`s (via `#[serde(default)]`), then `file`, then the
/// environment variables starting with `env_prefix` + `_`. The error names the setting.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, String> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true),
    );
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

/// Parses TOML text into `T` (for tests of annotated example files).
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

/// Checks that `url` (the setting or flag `name`) is an `http://` or `https://` URL, so
/// that `127.0.0.1:7070` is a clear error rather than a failed connection.
pub fn check_http_url(name: &str, url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "{name} must start with http:// or https://, got {url:?} (did you mean http://{url}?)"
        ))
    }
}

/// Checks that `expr` is a six-field cron expression (with seconds).
pub fn check_cron(name: &str, expr: &str) -> Result<(), String> {
    if expr.split_whitespace().count() == 6 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a cron expression with six fields (sec min hour day month weekday), got {expr:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        listen: String,
    }

    #[test]
    fn files_are_read_and_unknown_keys_named() {
        assert_eq!(
            from_toml::<Example>("listen = \"a\"").unwrap(),
            Example { listen: "a".into() }
        );
        assert!(from_toml::<Example>("lisen = \"a\"").unwrap_err().contains("lisen"));
        assert!(load::<Example>(Some(Path::new("/nonexistent.toml")), "X")
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_cron("jobs.x", "* * * * *").unwrap_err().contains("jobs.x"));
        assert!(check_cron("jobs.x", "*/5 * * * * *").is_ok());
    }
}
