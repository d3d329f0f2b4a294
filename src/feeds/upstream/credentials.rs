//! Secrets (API keys, tokens) read from a file or an environment variable named
//! in the settings. Errors name only where a value was looked for, never the
//! value.

use crate::feeds::Invalid;

/// Where a value is looked for: a file key of the settings with its path (when
/// set), else an environment key with its variable.
pub struct Place<'a> {
    pub file: (&'static str, Option<&'a str>),
    pub env: (&'static str, &'a str),
}

impl Place<'_> {
    /// Reads the value, without the surrounding whitespace a file usually ends
    /// with. An error names the setting, never the value.
    pub fn read(&self) -> Result<String, Invalid> {
        let (key, value) = match self.file {
            (key, Some(path)) => (
                key,
                std::fs::read_to_string(path)
                    .map_err(|e| Invalid::new(key, format!("{path}: {e}")))?,
            ),
            (_, None) => {
                let (key, var) = self.env;
                let value = std::env::var(var).map_err(|_| {
                    Invalid::new(key, format!("the environment variable {var} is not set"))
                })?;
                (key, value)
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(Invalid::new(key, "is empty"));
        }
        Ok(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_files_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("upstream-credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        std::env::set_var("UPSTREAM_CREDENTIALS_TEST_KEY", "key-id");
        let place = |file, var| Place {
            file: ("secret_file", file),
            env: ("secret_env", var),
        };
        let from_file = place(path.to_str(), "UPSTREAM_CREDENTIALS_TEST_KEY");
        assert_eq!(from_file.read().unwrap(), "s3cr3t", "the file wins");
        let from_env = place(None, "UPSTREAM_CREDENTIALS_TEST_KEY");
        assert_eq!(from_env.read().unwrap(), "key-id");

        let missing = place(None, "UPSTREAM_CREDENTIALS_TEST_UNSET")
            .read()
            .unwrap_err();
        assert_eq!(missing.key, "secret_env");
        assert!(missing.problem.contains("UPSTREAM_CREDENTIALS_TEST_UNSET"));
        std::fs::write(&path, "  \n").unwrap();
        let empty = from_file.read().unwrap_err();
        assert_eq!(
            (empty.key, empty.problem.as_str()),
            ("secret_file", "is empty")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
