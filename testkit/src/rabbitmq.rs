//! The shared RabbitMQ node, administered with `rabbitmqctl` (Debian package
//! `rabbitmq-server`), without disturbing what others use on it.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::unique_name;

/// Runs `rabbitmqctl ARGS` against the local node; its standard output.
pub fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (apt-get install rabbitmq-server)")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// RabbitMQ definitions imported under names no one else uses: every vhost and user they
/// mention is renamed `<name>-<random>` first, so an import never touches the node's own
/// `/` and `guest`, nor another test's. Dropping it deletes those vhosts and users.
pub struct ScratchDefinitions {
    vhosts: BTreeMap<String, String>,
    users: BTreeMap<String, String>,
}

impl ScratchDefinitions {
    /// Renames, then `rabbitmqctl import_definitions`.
    pub fn import(definitions: &Value) -> anyhow::Result<Self> {
        let mut definitions = definitions.clone();
        let scratch = Self {
            vhosts: Self::names(&definitions, "vhosts", "vhost", "scratch-vhost"),
            users: Self::names(&definitions, "users", "user", "scratch-user"),
        };
        scratch.rename(&mut definitions);
        let file = tempfile::Builder::new().suffix(".json").tempfile()?;
        std::fs::write(file.path(), serde_json::to_vec(&definitions)?)?;
        // rabbitmqctl hands the path to the node, which runs as another user.
        std::fs::set_permissions(
            file.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        let path = file.path().display().to_string();
        rabbitmqctl(&["import_definitions", &path])?;
        Ok(scratch)
    }

    /// The scratch name of vhost `original`.
    pub fn vhost(&self, original: &str) -> Option<&str> {
        self.vhosts.get(original).map(String::as_str)
    }

    /// The scratch name of user `original`.
    pub fn user(&self, original: &str) -> Option<&str> {
        self.users.get(original).map(String::as_str)
    }

    /// Every name of a kind: entries of the `list` section, and every `field` of any item
    /// of any section (a queue's `vhost`, a permission's `user`).
    fn names(
        definitions: &Value,
        list: &str,
        field: &str,
        prefix: &str,
    ) -> BTreeMap<String, String> {
        let mut found: Vec<&str> = Vec::new();
        if let Some(items) = definitions[list].as_array() {
            found.extend(items.iter().filter_map(|item| item["name"].as_str()));
        }
        if let Some(sections) = definitions.as_object() {
            for items in sections.values().filter_map(Value::as_array) {
                found.extend(items.iter().filter_map(|item| item[field].as_str()));
            }
        }
        found
            .into_iter()
            .map(|name| (name.to_owned(), unique_name(prefix)))
            .collect()
    }

    fn rename(&self, definitions: &mut Value) {
        let Some(sections) = definitions.as_object_mut() else {
            return;
        };
        for (section, items) in sections.iter_mut() {
            let Some(items) = items.as_array_mut() else {
                continue;
            };
            for item in items {
                let Some(item) = item.as_object_mut() else {
                    continue;
                };
                for (field, names) in [("vhost", &self.vhosts), ("user", &self.users)] {
                    if let Some(Value::String(name)) = item.get_mut(field) {
                        *name = names[name.as_str()].clone();
                    }
                }
                let names = match section.as_str() {
                    "vhosts" => &self.vhosts,
                    "users" => &self.users,
                    _ => continue,
                };
                if let Some(Value::String(name)) = item.get_mut("name") {
                    *name = names[name.as_str()].clone();
                }
            }
        }
    }
}

impl Drop for ScratchDefinitions {
    fn drop(&mut self) {
        for vhost in self.vhosts.values() {
            if let Err(e) = rabbitmqctl(&["delete_vhost", vhost]) {
                eprintln!("cleaning up: {e:#}");
            }
        }
        for user in self.users.values() {
            if let Err(e) = rabbitmqctl(&["delete_user", user]) {
                eprintln!("cleaning up: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renames_every_vhost_and_user_and_nothing_else() {
        let definitions = json!({
            "vhosts": [{"name": "v"}],
            "users": [{"name": "u", "password_hash": "h"}],
            "permissions": [{"user": "u", "vhost": "v", "read": ".*"}],
            "queues": [{"name": "q", "vhost": "v"}, {"name": "q2", "vhost": "/"}],
        });
        let scratch = ScratchDefinitions {
            vhosts: ScratchDefinitions::names(&definitions, "vhosts", "vhost", "sv"),
            users: ScratchDefinitions::names(&definitions, "users", "user", "su"),
        };
        let mut renamed = definitions.clone();
        scratch.rename(&mut renamed);
        let (v, u, root) = (
            scratch.vhost("v").unwrap().to_owned(),
            scratch.user("u").unwrap().to_owned(),
            scratch.vhost("/").unwrap().to_owned(),
        );
        assert!(v.starts_with("sv-") && u.starts_with("su-") && root.starts_with("sv-"));
        assert_eq!(
            renamed,
            json!({
                "vhosts": [{"name": v}],
                "users": [{"name": u, "password_hash": "h"}],
                "permissions": [{"user": u, "vhost": v, "read": ".*"}],
                "queues": [{"name": "q", "vhost": v}, {"name": "q2", "vhost": root}],
            })
        );
        // Nothing was imported: nothing to delete.
        std::mem::forget(scratch);
    }
}
