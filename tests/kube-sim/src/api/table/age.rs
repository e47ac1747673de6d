//! Ages as the printers write them (`duration.HumanDuration`): `45s`, `2m5s`, `3h5m`, `2d2h`.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::meta;

/// An elapsed time as ages are printed (`duration.HumanDuration`).
pub(crate) fn human_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let (years, days) = (hours / 24 / 365, hours / 24 % 365);
        return match days {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The time since a timestamp field, or `<unknown>` when it is absent.
pub(crate) fn since(object: &Value, pointer: &str, now: SystemTime) -> String {
    match meta::parse_rfc3339(meta::str_at(object, pointer)) {
        Some(at) => human_duration(now.duration_since(at).unwrap_or_default()),
        None => "<unknown>".to_string(),
    }
}

pub(crate) fn age(object: &Value, now: SystemTime) -> String {
    since(object, "/metadata/creationTimestamp", now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (45, "45s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (30 * 3600, "30h"),
            (50 * 3600, "2d2h"),
            (30 * 86_400, "30d"),
            (800 * 86_400, "2y70d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(Duration::from_secs(seconds)), expected);
        }
    }
}
