//! The kernel's network hardening (the sysctl settings of the hardening seed), read from
//! `/proc/sys` and compared with what a SIP server facing the internet should have.
//!
//! It only reads; changing a setting is the operator's decision, so each finding carries
//! the exact `sysctl -w` line and the line for a file in `/etc/sysctl.d/`.

use std::path::Path;

/// One recommended setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The sysctl key, e.g. `net.ipv4.conf.all.rp_filter`.
    pub key: &'static str,
    /// The recommended value.
    pub recommended: &'static str,
    /// Other values that are as good (e.g. loose reverse-path filtering).
    pub also_fine: &'static [&'static str],
    /// Why.
    pub why: &'static str,
}

/// The settings checked, in the order they are reported.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "net.ipv4.conf.all.rp_filter",
        recommended: "1",
        also_fine: &["2"],
        why: "drop packets whose source is not routed back through the interface they came in on (anti-spoofing); 2 (loose) for asymmetric routing",
    },
    Setting {
        key: "net.ipv4.conf.default.rp_filter",
        recommended: "1",
        also_fine: &["2"],
        why: "the same for interfaces created later",
    },
    Setting {
        key: "net.ipv4.conf.all.log_martians",
        recommended: "1",
        also_fine: &[],
        why: "log packets with impossible source addresses",
    },
    Setting {
        key: "net.ipv4.conf.default.log_martians",
        recommended: "1",
        also_fine: &[],
        why: "the same for interfaces created later",
    },
    Setting {
        key: "net.ipv4.conf.all.accept_redirects",
        recommended: "0",
        also_fine: &[],
        why: "ICMP redirects let an attacker on the path rewrite routes",
    },
    Setting {
        key: "net.ipv4.conf.default.accept_redirects",
        recommended: "0",
        also_fine: &[],
        why: "the same for interfaces created later",
    },
    Setting {
        key: "net.ipv4.conf.all.secure_redirects",
        recommended: "0",
        also_fine: &[],
        why: "not even redirects from the listed gateways",
    },
    Setting {
        key: "net.ipv6.conf.all.accept_redirects",
        recommended: "0",
        also_fine: &[],
        why: "ICMPv6 redirects, as for IPv4",
    },
    Setting {
        key: "net.ipv6.conf.default.accept_redirects",
        recommended: "0",
        also_fine: &[],
        why: "the same for interfaces created later",
    },
    Setting {
        key: "net.ipv4.conf.all.send_redirects",
        recommended: "0",
        also_fine: &[],
        why: "a server is not a router",
    },
    Setting {
        key: "net.ipv4.conf.default.send_redirects",
        recommended: "0",
        also_fine: &[],
        why: "the same for interfaces created later",
    },
    Setting {
        key: "net.ipv4.conf.all.accept_source_route",
        recommended: "0",
        also_fine: &[],
        why: "source-routed packets choose their own path past filters",
    },
    Setting {
        key: "net.ipv4.conf.default.accept_source_route",
        recommended: "0",
        also_fine: &[],
        why: "the same for interfaces created later",
    },
    Setting {
        key: "net.ipv6.conf.all.accept_source_route",
        recommended: "0",
        also_fine: &[],
        why: "IPv6 routing headers, as for IPv4",
    },
    Setting {
        key: "net.ipv4.tcp_syncookies",
        recommended: "1",
        also_fine: &[],
        why: "answer SYN floods without filling the backlog",
    },
    Setting {
        key: "net.ipv4.icmp_echo_ignore_broadcasts",
        recommended: "1",
        also_fine: &[],
        why: "no smurf amplification",
    },
    Setting {
        key: "net.ipv4.icmp_ignore_bogus_error_responses",
        recommended: "1",
        also_fine: &[],
        why: "no log flood from bogus ICMP errors",
    },
    Setting {
        key: "net.ipv6.conf.all.accept_ra",
        recommended: "0",
        also_fine: &[],
        why: "router advertisement floods (the seed's IPv6 attack); keep 1 where the address comes from SLAAC",
    },
    Setting {
        key: "net.ipv6.conf.default.accept_ra",
        recommended: "0",
        also_fine: &[],
        why: "the same for interfaces created later",
    },
];

/// One setting as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is checked.
    pub setting: Setting,
    /// The current value; `None` if the key does not exist (e.g. IPv6 disabled).
    pub current: Option<String>,
}

impl Finding {
    /// True if the value is the recommended one or as good; an absent key is fine
    /// (nothing to harden).
    pub fn ok(&self) -> bool {
        self.current.as_deref().is_none_or(|value| {
            value == self.setting.recommended || self.setting.also_fine.contains(&value)
        })
    }

    /// The command that changes it now.
    pub fn sysctl_command(&self) -> String {
        format!(
            "sysctl -w {}={}",
            self.setting.key, self.setting.recommended
        )
    }

    /// The line that keeps it across reboots, for `/etc/sysctl.d/90-sipwall.conf`.
    pub fn sysctl_d_line(&self) -> String {
        format!("{} = {}", self.setting.key, self.setting.recommended)
    }
}

/// Reads every setting under `proc_sys` (normally `/proc/sys`).
pub fn audit(proc_sys: &Path) -> Vec<Finding> {
    SETTINGS
        .iter()
        .map(|setting| {
            let path = proc_sys.join(setting.key.replace('.', "/"));
            Finding {
                setting: *setting,
                current: std::fs::read_to_string(path)
                    .ok()
                    .map(|value| value.trim().to_owned()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(root: &Path, key: &str, value: &str) {
        let path = root.join(key.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{value}\n")).unwrap();
    }

    #[test]
    fn findings_compare_with_the_recommendation_and_say_how_to_fix() {
        let root = tempfile::tempdir().unwrap();
        for setting in SETTINGS {
            set(root.path(), setting.key, setting.recommended);
        }
        set(root.path(), "net.ipv4.conf.all.rp_filter", "2");
        set(root.path(), "net.ipv4.tcp_syncookies", "0");
        std::fs::remove_file(root.path().join("net/ipv6/conf/all/accept_ra")).unwrap();
        let findings = audit(root.path());
        let off: Vec<_> = findings.iter().filter(|f| !f.ok()).collect();
        assert_eq!(off.len(), 1, "{off:?}");
        assert_eq!(off[0].setting.key, "net.ipv4.tcp_syncookies");
        assert_eq!(off[0].current.as_deref(), Some("0"));
        assert_eq!(
            off[0].sysctl_command(),
            "sysctl -w net.ipv4.tcp_syncookies=1"
        );
        assert_eq!(off[0].sysctl_d_line(), "net.ipv4.tcp_syncookies = 1");
        let absent = findings
            .iter()
            .find(|f| f.setting.key == "net.ipv6.conf.all.accept_ra")
            .unwrap();
        assert!(absent.current.is_none() && absent.ok());
    }
}
