//! The bot's messages, in plain words for clinicians and officers.

use crate::registers::RegisterEntry;
use crate::state::ReviewCase;

/// "BIG, RPPS or GMC".
fn or_list(names: &[&str]) -> String {
    match names {
        [] => "a professional register".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Returns an example message for the first register, such as "BIG 19012345601".
fn example(names: &[&str]) -> String {
    let name = names.first().copied().unwrap_or("BIG");
    let number = match name.to_ascii_uppercase().as_str() {
        "RPPS" => "10001234567",
        "GMC" => "1234567",
        _ => "19012345601",
    };
    format!("{name} {number}")
}

pub fn greeting(registers: &[&str]) -> String {
    format!(
        "Welcome. Before you can start conversations here, I need to check that you are a \
         healthcare professional. Please send me your registration number with the name of \
         your register ({}), for example: {}. Make sure your display name is your name as \
         the register lists it.",
        or_list(registers),
        example(registers)
    )
}

pub fn greeting_with_identity(how: &str, registers: &[&str]) -> String {
    format!(
        "Welcome. Your identity is confirmed ({how}), so you can start conversations with \
         verified colleagues. If you are a registered healthcare professional, send me your \
         registration number ({}), for example: {}, to be verified as one and listed in the \
         whole directory.",
        or_list(registers),
        example(registers)
    )
}

pub fn identity_granted(how: &str) -> String {
    format!(
        "Your identity is confirmed ({how}). You can now start conversations with verified \
         colleagues."
    )
}

pub fn help(registers: &[&str]) -> String {
    format!(
        "Send me your registration number with the name of your register ({}), for example: \
         {}.",
        or_list(registers),
        example(registers)
    )
}

pub fn missing_number(register: &str) -> String {
    format!("Please send the number after the register name, for example: {register} 12345678.")
}

pub fn which_register(number: &str, registers: &[&str]) -> String {
    format!(
        "The number {number} is in more than one register. Please send it again with the name \
         of your register ({}).",
        or_list(registers)
    )
}

pub fn not_found(register: Option<&str>, number: &str, registers: &[&str]) -> String {
    match register {
        Some(register) => format!(
            "I could not find {register} number {number} in the {register} register. Please \
             check the number and send it again."
        ),
        None => format!(
            "I could not find the number {number} in any register I know ({}). Please check \
             it and send it again with the name of your register.",
            or_list(registers)
        ),
    }
}

pub fn unreadable() -> &'static str {
    "I could not read your last message: your app did not send me the key to decrypt it. \
     Please send it again; if this keeps happening, sign out and in again in your app."
}

pub fn struck_off(register: &str, number: &str) -> String {
    format!(
        "The {register} register lists number {number} as struck off or suspended, so I cannot \
         verify you with it. If you think this is a mistake, contact the register."
    )
}

pub fn no_display_name() -> String {
    "You have no display name yet. Please set your display name to your full name as your \
     register lists it, then send your number again."
        .to_owned()
}

pub fn name_mismatch(register: &str, number: &str) -> String {
    format!(
        "{register} number {number} is registered under a different name than your display \
         name. Please set your display name to your name as the register lists it, then send \
         your number again."
    )
}

pub fn sent_for_review(register: &str, number: &str) -> String {
    format!(
        "I found {register} number {number}, but I am not sure the name matches yours. A \
         verification officer will look at it and I will tell you the outcome here."
    )
}

pub fn already_verified(register: &str, number: &str) -> String {
    format!("You are already verified with {register} number {number}.")
}

pub fn already_in_review() -> String {
    "A verification officer is already looking at your request. I will tell you the outcome \
     here."
        .to_owned()
}

pub fn verified(register: &str, entry: &RegisterEntry) -> String {
    let mut details = Vec::new();
    details.extend(entry.professions.iter().cloned());
    details.extend(entry.specialties.iter().cloned());
    details.extend(entry.organisations.iter().cloned());
    let details =
        if details.is_empty() { String::new() } else { format!(" ({})", details.join(", ")) };
    format!(
        "You are verified as a healthcare professional with {register} number {}{details}. \
         You now appear in the professional directory and can search all of it. I check the \
         register regularly; if the registration ends, the verification ends too.",
        entry.number
    )
}

pub fn review_approved(register: &str, entry: &RegisterEntry) -> String {
    format!("A verification officer confirmed your registration. {}", verified(register, entry))
}

pub fn review_rejected(register: &str, number: &str, reason: &str) -> String {
    format!(
        "A verification officer could not confirm {register} number {number} as yours. \
         Reason: {reason}"
    )
}

pub fn revoked(register: &str, number: &str, why: &str) -> String {
    format!(
        "Your verification as a healthcare professional has ended: {register} number {number} \
         {why}. If you think this is a mistake, contact the register, then send me your number \
         again."
    )
}

pub fn case_posted(id: u64, case: &ReviewCase) -> String {
    format!(
        "Case {id}: {} (display name \"{}\") sent {} {}, which the register lists as \"{}\". \
         {}. Answer with !approve {id} or !reject {id} <reason>.",
        case.user_id,
        case.display_name,
        case.register,
        case.number,
        case.register_name,
        case.reason
    )
}

pub fn queue(cases: &[(u64, ReviewCase)]) -> String {
    if cases.is_empty() {
        return "No cases are waiting.".to_owned();
    }
    let lines: Vec<String> = cases
        .iter()
        .map(|(id, case)| {
            format!(
                "Case {id}: {} as \"{}\", {} {} listed as \"{}\"",
                case.user_id, case.display_name, case.register, case.number, case.register_name
            )
        })
        .collect();
    format!("{} case(s) waiting:\n{}", cases.len(), lines.join("\n"))
}

pub fn officer_help() -> &'static str {
    "Commands: !queue lists waiting cases; !approve <case> verifies the person; \
     !reject <case> <reason> refuses and tells the person the reason."
}

pub fn not_an_officer() -> &'static str {
    "Only the configured verification officers can decide cases."
}

pub fn no_such_case(id: u64) -> String {
    format!("There is no waiting case {id}. Send !queue to see the waiting cases.")
}

pub fn case_approved(id: u64, user_id: &str) -> String {
    format!("Case {id} approved: {user_id} is now verified as a healthcare professional.")
}

pub fn case_rejected(id: u64, user_id: &str) -> String {
    format!("Case {id} rejected; {user_id} has been told the reason.")
}

pub fn case_outdated(id: u64, register: &str, number: &str) -> String {
    format!(
        "Case {id} cannot be approved: {register} number {number} is no longer an active \
         registration. The case is closed."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_naturally() {
        assert_eq!(or_list(&["BIG", "RPPS", "GMC"]), "BIG, RPPS or GMC");
        assert_eq!(or_list(&["GMC"]), "GMC");
        assert!(greeting(&["GMC"]).contains("GMC 1234567"));
        assert!(help(&[]).contains("BIG 19012345601"));
    }
}
