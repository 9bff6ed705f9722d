//! Kernel enforcement for sipwall, through nftables.
//!
//! Two tables, both sipwall's own, so nothing here ever touches another program's rules:
//!
//! - [`sets`]: table `inet sipwall_bans`, the dynamic ban sets the daemon fills. Its chain
//!   hooks `prerouting` at priority `raw` (-300), before connection tracking and before
//!   any filter table, so a banned source's packets are dropped first, whatever state
//!   conntrack holds for them. The daemon owns its elements; applying or rolling back the
//!   host firewall never touches them.
//! - the host firewall policy (`inet sipwall`): described by [`config`] (the `[firewall]`
//!   section), compiled by [`compile`], loaded by [`nft`] and applied atomically with a
//!   rollback unless confirmed by [`apply`]. It hooks `input` only; the forward and
//!   output paths are left alone.
//!
//! [`audit`] reads the kernel's sysctl hardening beside it.

pub mod apply;
pub mod audit;
pub mod compile;
pub mod config;
pub mod conntrack;
pub mod nft;
pub mod sets;

pub use config::FirewallConfig;
