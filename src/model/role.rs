//! Roles of the people and machines that call tagwatch (SPEC table of users).

use serde::{Deserialize, Serialize};

/// What a token's holder may do. Checked by the API layer on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A tag or a vendor gateway: posts pings only.
    Device,
    /// A probation officer: their caseload's zones, alerts and trails.
    Officer,
    /// A police analyst: lawful location queries with a justification.
    Analyst,
    /// An auditor: reads and verifies the audit trail.
    Auditor,
    /// An administrator: users, subjects, devices; everything operational.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Officer => "officer",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "device" => Role::Device,
            "officer" => Role::Officer,
            "analyst" => Role::Analyst,
            "auditor" => Role::Auditor,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
