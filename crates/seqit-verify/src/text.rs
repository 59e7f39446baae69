//! Small text helpers shared by the checkers and the scripted answerers, so that both
//! agree on what a word, a sentence or a number is.

/// Words: whitespace-separated pieces holding at least one letter or digit (so a lone
/// dash or `***` is not a word; `don't` and `well-known` are one word each).
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect()
}

/// Number of [`words`].
pub fn word_count(text: &str) -> usize {
    words(text).len()
}

/// Lowercased runs of letters and digits (`sea's` gives `sea`, `s`): for matching
/// keywords as whole words.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// How often `word` occurs as a whole word, ignoring case.
pub fn count_word(text: &str, word: &str) -> usize {
    let word = word.to_lowercase();
    tokens(text).iter().filter(|t| **t == word).count()
}

/// Whether `word` occurs as a whole word, ignoring case ([`count_word`] above 0).
pub fn contains_word(text: &str, word: &str) -> bool {
    count_word(text, word) > 0
}

/// The last run of letters and digits, as written.
pub fn last_word(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .rfind(|t| !t.is_empty())
}

/// The first run of letters and digits, as written.
pub fn first_word(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .find(|t| !t.is_empty())
}

/// Letters in `word`: digits, hyphens and apostrophes do not count.
pub fn letter_count(word: &str) -> usize {
    word.chars().filter(|c| c.is_alphabetic()).count()
}

/// Abbreviations whose period does not end a sentence.
const ABBREVIATIONS: [&str; 7] = ["mr", "mrs", "ms", "dr", "st", "vs", "etc"];

/// Sentences: runs of text ended by `.`, `!`, `?` or `…` (followed by a space, a quote
/// or the end), or by a line break. Periods inside numbers (`3.5`), after a single letter
/// (`P.S.`, `e.g.`) or after a common abbreviation do not end a sentence.
pub fn sentence_count(text: &str) -> usize {
    let chars: Vec<char> = text.chars().collect();
    let mut count = 0;
    let mut pending = false; // the current sentence has a letter or digit
    let mut word = String::new(); // the word before the current character
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() {
            pending = true;
            word.push(c);
            i += 1;
            continue;
        }
        let ends = match c {
            '\n' => true,
            '!' | '?' | '…' => true,
            '.' => {
                let next = chars.get(i + 1).copied();
                let in_number = word.chars().last().is_some_and(|p| p.is_ascii_digit())
                    && next.is_some_and(|n| n.is_ascii_digit());
                let short = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
                let abbreviation = ABBREVIATIONS.contains(&word.to_lowercase().as_str());
                !in_number && !short && !abbreviation
            }
            _ => false,
        };
        if ends && c != '\n' {
            // A run of terminators and closing quotes ends here only before a space or
            // the end ("Really?!", "he said.").
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j], '.' | '!' | '?' | '"' | '\'' | '”' | ')')
            {
                j += 1;
            }
            if j < chars.len() && !chars[j].is_whitespace() {
                word.clear();
                i = j;
                continue;
            }
            if pending {
                count += 1;
                pending = false;
            }
            word.clear();
            i = j;
            continue;
        }
        if ends && pending {
            count += 1;
            pending = false;
        }
        word.clear();
        i += 1;
    }
    if pending {
        count += 1;
    }
    count
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn number_word(token: &str) -> Option<i64> {
    if let Some(i) = ONES.iter().position(|w| *w == token) {
        return Some(i as i64);
    }
    TENS.iter()
        .position(|w| *w == token)
        .map(|i| 20 + 10 * i as i64)
}

/// Numbers written in the text, in order: integers (`-5`, `5,000`), decimals (`2.5`,
/// kept as they are so they never equal an integer answer by accident) and number words
/// up to ninety-nine (`seven`, `forty-two`, `forty two`).
pub fn numbers(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    // The previous number word, to join "forty two" (position of its end, value).
    let mut last_tens: Option<(usize, usize)> = None;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let negative = i > 0
                && chars[i - 1] == '-'
                && (i == 1 || chars[i - 2].is_whitespace() || chars[i - 2] == '(');
            let mut digits = String::new();
            let mut j = i;
            loop {
                while j < chars.len() && chars[j].is_ascii_digit() {
                    digits.push(chars[j]);
                    j += 1;
                }
                // A thousands separator: a comma then exactly three digits.
                let group = chars.get(j) == Some(&',')
                    && (1..=3).all(|k| chars.get(j + k).is_some_and(|d| d.is_ascii_digit()))
                    && !chars.get(j + 4).is_some_and(|d| d.is_ascii_digit());
                if group {
                    j += 1;
                } else {
                    break;
                }
            }
            let mut value: f64 = digits.parse().unwrap_or(f64::NAN);
            if chars.get(j) == Some(&'.') && chars.get(j + 1).is_some_and(|d| d.is_ascii_digit()) {
                let mut fraction = String::from("0.");
                j += 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    fraction.push(chars[j]);
                    j += 1;
                }
                value += fraction.parse::<f64>().unwrap_or(0.0);
            }
            if negative {
                value = -value;
            }
            // Ordinals ("3rd") and digits inside names ("a1") are not answers; a unit
            // glued to a number ("5000m") is fine.
            let suffix: String = chars[j..]
                .iter()
                .take_while(|c| c.is_alphabetic())
                .collect::<String>()
                .to_lowercase();
            let glued = ["st", "nd", "rd", "th"].contains(&suffix.as_str())
                || (i > 0 && chars[i - 1].is_alphabetic());
            if !glued && value.is_finite() {
                found.push(value);
            }
            last_tens = None;
            i = j;
        } else if c.is_alphabetic() {
            let start = i;
            let mut j = i;
            while j < chars.len() && chars[j].is_alphabetic() {
                j += 1;
            }
            let token: String = chars[start..j].iter().collect::<String>().to_lowercase();
            if let Some(value) = number_word(&token) {
                match last_tens {
                    // "forty-two" / "forty two": one number.
                    Some((end, index))
                        if (1..10).contains(&value)
                            && chars[end..start].iter().all(|c| *c == '-' || *c == ' ')
                            && start - end <= 1 =>
                    {
                        found[index] += value as f64;
                        last_tens = None;
                    }
                    _ => {
                        found.push(value as f64);
                        last_tens =
                            (value >= 20 && value % 10 == 0).then_some((j, found.len() - 1));
                    }
                }
            } else {
                last_tens = None;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// `s` with its first letter in uppercase.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `a`, `a and b`, `a, b and c` (with `conjunction` in place of `and`).
pub fn join_list(items: &[String], conjunction: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

/// `first`, `second`, ... for step positions (1-based).
pub fn ordinal(n: usize) -> String {
    const NAMES: [&str; 10] = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
        "tenth",
    ];
    NAMES
        .get(n.wrapping_sub(1))
        .map_or_else(|| format!("{n}th"), |s| s.to_string())
}

/// Whitespace collapsed to single spaces and trailing punctuation removed: list items
/// and phrases compared the way a reader would.
pub fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(|c: char| ".,;:!?".contains(c))
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_tokens() {
        assert_eq!(word_count("The sea -- it's deep, well-known."), 5);
        assert_eq!(word_count("  *** "), 0);
        assert_eq!(tokens("Sea's WAVES"), vec!["sea", "s", "waves"]);
        assert_eq!(count_word("The sea, the SEA and the seashore.", "sea"), 2);
        assert_eq!(last_word("It ends here!\""), Some("here"));
        assert_eq!(first_word("\"Honestly, yes\""), Some("Honestly"));
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence_count("One. Two! Three?"), 3);
        assert_eq!(sentence_count("It costs 3.5 dollars. P.S. it is cheap."), 2);
        assert_eq!(sentence_count("Really?! Yes."), 2);
        assert_eq!(sentence_count("No terminator here"), 1);
        assert_eq!(sentence_count("line one\nline two."), 2);
        assert_eq!(sentence_count("He said \"stop.\" Then he left."), 2);
        assert_eq!(sentence_count("Mr. Smith went home."), 1);
        assert_eq!(sentence_count(""), 0);
    }

    #[test]
    fn number_parsing() {
        assert_eq!(numbers("12 + 30 = 42."), vec![12.0, 30.0, 42.0]);
        assert_eq!(
            numbers("It is 5,000 meters, or -3 and 2.5"),
            vec![5000.0, -3.0, 2.5]
        );
        assert_eq!(numbers("1, 234"), vec![1.0, 234.0]);
        assert_eq!(
            numbers("forty-two and seven, twenty one"),
            vec![42.0, 7.0, 21.0]
        );
        assert_eq!(numbers("the 3rd item, someone, a1"), Vec::<f64>::new());
        assert_eq!(numbers("5km is 5000m"), vec![5.0, 5000.0]);
        assert_eq!(numbers("30-12=18"), vec![30.0, 12.0, 18.0]);
    }

    #[test]
    fn lists_and_ordinals() {
        let items = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(join_list(&items, "and"), "a, b and c");
        assert_eq!(join_list(&items[..1], "or"), "a");
        assert_eq!(ordinal(3), "third");
        assert_eq!(normalize("  Harbor   lights. "), "Harbor lights");
        assert_eq!(capitalize("the sea"), "The sea");
    }
}
