//! Parsing of messages to the bot: registration numbers in direct chats, and officers'
//! commands in the officers' room.

/// The request in a message of a direct chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRequest {
    /// A registration number, with the register it was given for if the message named one.
    Number { register: Option<String>, number: String },
    /// A register was named but no number followed it.
    MissingNumber { register: String },
    /// Anything else: the bot explains what to send.
    Help,
}

/// Reads a registration number from a message such as "BIG 19012345601", "rpps: 100 0123
/// 4567" or "My GMC number is 1234567". `registers` are the configured register names.
pub fn parse_user_message(text: &str, registers: &[&str]) -> UserRequest {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ';' | '#' | '(' | ')'))
        .map(|token| token.trim_end_matches(['.', '!', '?']))
        .filter(|token| !token.is_empty())
        .collect();
    let is_number_part = |token: &str| {
        token.chars().any(|c| c.is_ascii_digit())
            && token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '/'))
    };

    let named = tokens.iter().enumerate().find_map(|(at, token)| {
        registers.iter().find(|name| name.eq_ignore_ascii_case(token)).map(|name| (at, *name))
    });
    if let Some((at, register)) = named {
        let number: String = tokens[at + 1..]
            .iter()
            .skip_while(|token| !is_number_part(token))
            .take_while(|token| is_number_part(token))
            .copied()
            .collect();
        return if number.is_empty() {
            UserRequest::MissingNumber { register: register.to_owned() }
        } else {
            UserRequest::Number { register: Some(register.to_owned()), number }
        };
    }

    let digits_only =
        |token: &&&str| token.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-'));
    let number: String = tokens.iter().filter(digits_only).copied().collect();
    if number.chars().filter(char::is_ascii_digit).count() >= 5 {
        UserRequest::Number { register: None, number }
    } else {
        UserRequest::Help
    }
}

/// A command in the officers' room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficerCommand {
    Approve { case: u64 },
    Reject { case: u64, reason: String },
    Queue,
    Help,
}

/// Reads an officer's command. Returns `None` for a message that is not a command (officers
/// also talk to each other there), and `Err` with the correct usage for a command written
/// wrongly.
pub fn parse_officer_command(text: &str) -> Option<Result<OfficerCommand, &'static str>> {
    let text = text.trim();
    let rest = text.strip_prefix('!')?;
    let (command, arguments) = match rest.split_once(char::is_whitespace) {
        Some((command, arguments)) => (command, arguments.trim()),
        None => (rest, ""),
    };
    let case = |argument: &str| argument.trim_start_matches('#').parse::<u64>().ok();
    let parsed = match command.to_ascii_lowercase().as_str() {
        "approve" => match case(arguments) {
            Some(case) => Ok(OfficerCommand::Approve { case }),
            None => Err("Usage: !approve <case number>"),
        },
        "reject" => {
            let (number, reason) =
                arguments.split_once(char::is_whitespace).unwrap_or((arguments, ""));
            match (case(number), reason.trim()) {
                (Some(_), "") => {
                    Err("Usage: !reject <case number> <reason>. The reason is sent to the person.")
                }
                (Some(case), reason) => {
                    Ok(OfficerCommand::Reject { case, reason: reason.to_owned() })
                }
                (None, _) => Err("Usage: !reject <case number> <reason>"),
            }
        }
        "queue" => Ok(OfficerCommand::Queue),
        "help" => Ok(OfficerCommand::Help),
        _ => return None,
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTERS: &[&str] = &["BIG", "RPPS", "GMC"];

    fn number(register: Option<&str>, number: &str) -> UserRequest {
        UserRequest::Number { register: register.map(str::to_owned), number: number.to_owned() }
    }

    #[test]
    fn registration_numbers_in_many_spellings() {
        let cases = [
            ("BIG 19012345601", number(Some("BIG"), "19012345601")),
            ("big 190 123 456 01", number(Some("BIG"), "19012345601")),
            ("  Big:19012345601. ", number(Some("BIG"), "19012345601")),
            ("RPPS 10001234567", number(Some("RPPS"), "10001234567")),
            ("rpps: 100 0123 4567", number(Some("RPPS"), "10001234567")),
            ("GMC 1234567", number(Some("GMC"), "1234567")),
            ("My GMC number is 1234567", number(Some("GMC"), "1234567")),
            ("GMC number: 1234567", number(Some("GMC"), "1234567")),
            ("gmc #1234567!", number(Some("GMC"), "1234567")),
            ("19012345601", number(None, "19012345601")),
            ("190-123-456-01", number(None, "190-123-456-01")),
            ("BIG", UserRequest::MissingNumber { register: "BIG".into() }),
            ("hello", UserRequest::Help),
            ("room 12", UserRequest::Help),
            ("", UserRequest::Help),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_user_message(text, REGISTERS), expected, "{text:?}");
        }
    }

    #[test]
    fn officer_commands() {
        let parse = parse_officer_command;
        assert_eq!(parse("!approve 3"), Some(Ok(OfficerCommand::Approve { case: 3 })));
        assert_eq!(parse(" !Approve #12 "), Some(Ok(OfficerCommand::Approve { case: 12 })));
        assert_eq!(
            parse("!reject 4 Name differs from the passport"),
            Some(Ok(OfficerCommand::Reject {
                case: 4,
                reason: "Name differs from the passport".into()
            }))
        );
        assert_eq!(parse("!queue"), Some(Ok(OfficerCommand::Queue)));
        assert_eq!(parse("!help"), Some(Ok(OfficerCommand::Help)));
        assert!(matches!(parse("!approve"), Some(Err(_))));
        assert!(matches!(parse("!approve x"), Some(Err(_))));
        assert!(matches!(parse("!reject 4"), Some(Err(message)) if message.contains("reason")));
        assert_eq!(parse("good morning"), None);
        assert_eq!(parse("!unknown"), None);
    }
}
