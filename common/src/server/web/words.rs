//! Times, ages and refusals in the words a page shows.

use crate::wire::problem::Problem;
use time::OffsetDateTime;

/// `10:42 UTC` for today, `2026-11-25 10:42 UTC` otherwise.
pub fn clock(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    if at.date() == now.to_offset(time::UtcOffset::UTC).date() {
        format!("{:02}:{:02} UTC", at.hour(), at.minute())
    } else {
        format!("{} {:02}:{:02} UTC", at.date(), at.hour(), at.minute())
    }
}

/// `12 s`, `5 min`, `3 h 20 min`, `2 days`.
pub fn age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} days", secs / 86_400),
    }
}

/// How long ago `at` was, in words (`12 s ago`), or `never`.
pub fn ago(at: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match at {
        Some(at) => format!("{} ago", age(u64::try_from((now - at).whole_seconds()).unwrap_or(0))),
        None => "never".to_owned(),
    }
}

/// A refusal of the API as a sentence for a person: what went wrong, then the API's own
/// explanation and its stable code (for a support call).
pub fn refusal(problem: &Problem) -> String {
    let lead = match problem.code.as_str() {
        "unauthorized" => "That token or key was not accepted.",
        "forbidden" => "Your sign-in may not do this.",
        "insufficient_stock" => "There is not enough stock for that.",
        "version_conflict" => "Someone changed this in the meantime; reload the page and try again.",
        "sku_taken" => "Another product already has that SKU.",
        "store_name_taken" => "Another store already has that name.",
        "idempotency_key_reused" => "This form was already sent with other values; reload the page.",
        "storage_unavailable" | "shutting_down" | "timeout" => {
            "The server could not do this right now; nothing was changed. Try again."
        }
        code if code.ends_with("_not_found") => "That was not found.",
        _ => "That was refused.",
    };
    format!("{lead} {} (code {})", problem.detail, problem.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_and_ages_read_as_words() {
        let now = datetime!(2026-11-26 12:00 UTC);
        assert_eq!(clock(datetime!(2026-11-26 10:42:10 UTC), now), "10:42 UTC");
        assert_eq!(clock(datetime!(2026-11-25 10:42 UTC), now), "2026-11-25 10:42 UTC");
        assert_eq!(age(42), "42 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(3 * 3600 + 20 * 60), "3 h 20 min");
        assert_eq!(ago(None, now), "never");
        assert_eq!(ago(Some(datetime!(2026-11-26 11:59 UTC)), now), "1 min ago");
    }

    #[test]
    fn a_refusal_keeps_the_apis_detail_and_code() {
        let problem = Problem::new(409, "insufficient_stock", "Insufficient stock", "only 2 available");
        assert_eq!(
            refusal(&problem),
            "There is not enough stock for that. only 2 available (code insufficient_stock)"
        );
    }
}
