//! The step kinds: what each asks for, its parameters (plain data, serialized with the
//! item) and what its answer produces for later steps to act on.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The four families of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The shape of the answer (case, quotes, lists, JSON, ...).
    Format,
    /// What the answer says or how long it is.
    Content,
    /// A value with exactly one right answer.
    Computation,
    /// Acts on the answer to an earlier step.
    Dependent,
}

/// A unit conversion with an integer factor, so results are exact integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    /// Kilometers to meters (× 1000).
    KilometersToMeters,
    /// Meters to centimeters (× 100).
    MetersToCentimeters,
    /// Kilograms to grams (× 1000).
    KilogramsToGrams,
    /// Liters to milliliters (× 1000).
    LitersToMilliliters,
    /// Hours to minutes (× 60).
    HoursToMinutes,
    /// Minutes to seconds (× 60).
    MinutesToSeconds,
    /// Days to hours (× 24).
    DaysToHours,
}

impl Conversion {
    /// Every conversion, in a fixed order.
    pub const ALL: [Conversion; 7] = [
        Conversion::KilometersToMeters,
        Conversion::MetersToCentimeters,
        Conversion::KilogramsToGrams,
        Conversion::LitersToMilliliters,
        Conversion::HoursToMinutes,
        Conversion::MinutesToSeconds,
        Conversion::DaysToHours,
    ];

    /// Target units in one source unit (1000 for kilometers to meters).
    pub fn factor(self) -> i64 {
        match self {
            Conversion::KilometersToMeters
            | Conversion::KilogramsToGrams
            | Conversion::LitersToMilliliters => 1000,
            Conversion::MetersToCentimeters => 100,
            Conversion::HoursToMinutes | Conversion::MinutesToSeconds => 60,
            Conversion::DaysToHours => 24,
        }
    }

    /// Unit names as written in instructions (plural).
    pub fn units(self) -> (&'static str, &'static str) {
        match self {
            Conversion::KilometersToMeters => ("kilometers", "meters"),
            Conversion::MetersToCentimeters => ("meters", "centimeters"),
            Conversion::KilogramsToGrams => ("kilograms", "grams"),
            Conversion::LitersToMilliliters => ("liters", "milliliters"),
            Conversion::HoursToMinutes => ("hours", "minutes"),
            Conversion::MinutesToSeconds => ("minutes", "seconds"),
            Conversion::DaysToHours => ("days", "hours"),
        }
    }
}

/// What an answer to a step yields for later steps: the class a dependent step needs
/// its referenced step to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Yields {
    /// Running text (a sentence or a few): words can be counted, a last word exists.
    Sentence,
    /// A list of items.
    List,
    /// One word.
    Word,
    /// One integer.
    Number,
    /// Nothing a dependent step acts on.
    Other,
}

macro_rules! step_kinds {
    ($($kind:ident => $name:literal, $group:ident;)*) => {
        /// The name of a step kind, without its parameters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum StepKind {
            $(
                #[doc = concat!(
                    "`", $name, "`, a [`Group::", stringify!($group), "`] step: its parameters ",
                    "and what passes are at [`StepSpec::", stringify!($kind), "`]."
                )]
                $kind,
            )*
        }

        impl StepKind {
            /// Every kind, in a fixed order.
            pub const ALL: &'static [StepKind] = &[$(StepKind::$kind,)*];

            /// The snake_case name used in the template file and in JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $(StepKind::$kind => $name,)*
                }
            }

            /// The family the kind belongs to.
            pub fn group(self) -> Group {
                match self {
                    $(StepKind::$kind => Group::$group,)*
                }
            }
        }
    };
}

step_kinds! {
    AllCapitals => "all_capitals", Format;
    AllLowercase => "all_lowercase", Format;
    DoubleQuotes => "double_quotes", Format;
    JsonObject => "json_object", Format;
    NumberedList => "numbered_list", Format;
    BulletedList => "bulleted_list", Format;
    Title => "title", Format;
    Paragraphs => "paragraphs", Format;
    EndWith => "end_with", Format;
    StartWith => "start_with", Format;
    Postscript => "postscript", Format;
    IncludeKeywords => "include_keywords", Content;
    AvoidKeyword => "avoid_keyword", Content;
    ExactWords => "exact_words", Content;
    MinWords => "min_words", Content;
    MaxWords => "max_words", Content;
    ExactSentences => "exact_sentences", Content;
    MentionTimes => "mention_times", Content;
    NoCommas => "no_commas", Content;
    ChooseWord => "choose_word", Content;
    Sum => "sum", Computation;
    Product => "product", Computation;
    Difference => "difference", Computation;
    CountLetters => "count_letters", Computation;
    CountLetter => "count_letter", Computation;
    SortWords => "sort_words", Computation;
    ReverseWord => "reverse_word", Computation;
    ConvertUnits => "convert_units", Computation;
    UppercaseWord => "uppercase_word", Computation;
    LargestNumber => "largest_number", Computation;
    CountWords => "count_words", Dependent;
    ListFirstItemCaps => "list_first_item_caps", Dependent;
    RepeatLastWord => "repeat_last_word", Dependent;
    TranslateWord => "translate_word", Dependent;
    CountListItems => "count_list_items", Dependent;
    CountLettersOfWord => "count_letters_of_word", Dependent;
    SumOfAnswers => "sum_of_answers", Dependent;
    MultiplyAnswer => "multiply_answer", Dependent;
}

/// Placeholders a phrasing may leave out: they only give the step a subject.
pub const OPTIONAL_PLACEHOLDERS: [&str; 4] = ["topic", "subject", "category", "language"];

impl StepKind {
    /// The kind of a snake_case name ([`StepKind::name`]); `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<StepKind> {
        StepKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Whether it acts on the answer to an earlier step ([`Group::Dependent`]).
    pub fn is_dependent(self) -> bool {
        self.group() == Group::Dependent
    }

    /// The placeholders its phrasings may use.
    pub fn placeholders(self) -> &'static [&'static str] {
        use StepKind::*;
        match self {
            AllCapitals | AllLowercase | DoubleQuotes | Title | Postscript => &["topic"],
            JsonObject => &["subject", "keys"],
            NumberedList | BulletedList | Paragraphs | ExactWords | MinWords | MaxWords
            | ExactSentences | NoCommas => &["topic", "count"],
            EndWith => &["topic", "phrase"],
            StartWith => &["topic", "word"],
            IncludeKeywords => &["topic", "keyword1", "keyword2"],
            AvoidKeyword => &["topic", "mention", "keyword"],
            MentionTimes => &["topic", "word", "count"],
            ChooseWord => &["category", "options"],
            Sum | Product | LargestNumber => &["numbers"],
            Difference => &["minuend", "subtrahend"],
            CountLetters | ReverseWord | UppercaseWord => &["word"],
            CountLetter => &["word", "letter"],
            SortWords => &["words"],
            ConvertUnits => &["value", "from", "to"],
            CountWords | ListFirstItemCaps | RepeatLastWord | CountListItems
            | CountLettersOfWord => &["ref"],
            TranslateWord => &["ref", "table", "language"],
            SumOfAnswers => &["refs"],
            MultiplyAnswer => &["ref", "factor"],
        }
    }

    /// The placeholders every phrasing must use: without them the step cannot be done.
    pub fn required_placeholders(self) -> impl Iterator<Item = &'static str> {
        self.placeholders()
            .iter()
            .copied()
            .filter(|p| !OPTIONAL_PLACEHOLDERS.contains(p))
    }

    /// What an answer to this kind yields for later steps.
    pub fn yields(self) -> Yields {
        use StepKind::*;
        match self {
            AllCapitals | AllLowercase | DoubleQuotes | EndWith | StartWith | IncludeKeywords
            | AvoidKeyword | ExactWords | MinWords | MaxWords | ExactSentences | MentionTimes
            | NoCommas => Yields::Sentence,
            NumberedList | BulletedList => Yields::List,
            ChooseWord | ReverseWord | UppercaseWord | TranslateWord | RepeatLastWord => {
                Yields::Word
            }
            Sum | Product | Difference | CountLetters | CountLetter | ConvertUnits
            | LargestNumber | CountWords | CountListItems | CountLettersOfWord | SumOfAnswers
            | MultiplyAnswer => Yields::Number,
            JsonObject | Title | Paragraphs | Postscript | SortWords | ListFirstItemCaps => {
                Yields::Other
            }
        }
    }

    /// Whether a dependent kind can act on the answer to `earlier`.
    pub fn can_refer_to(self, earlier: StepKind) -> bool {
        use StepKind::*;
        match self {
            CountWords | RepeatLastWord => earlier.yields() == Yields::Sentence,
            ListFirstItemCaps | CountListItems => earlier.yields() == Yields::List,
            // The translation table is built from the options of a choice.
            TranslateWord => earlier == ChooseWord,
            CountLettersOfWord => earlier.yields() == Yields::Word,
            SumOfAnswers | MultiplyAnswer => earlier.yields() == Yields::Number,
            _ => false,
        }
    }

    /// Earlier steps a dependent kind needs (0 for the others).
    pub fn references_needed(self) -> usize {
        match self {
            StepKind::SumOfAnswers => 2,
            k if k.is_dependent() => 1,
            _ => 0,
        }
    }
}

/// One step: its kind and parameters. Serialized as `{"kind": "...", ...params}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepSpec {
    /// One sentence with no lowercase letters.
    AllCapitals {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
    },
    /// One sentence with no uppercase letters.
    AllLowercase {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
    },
    /// The answer wrapped in double quotes.
    DoubleQuotes {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
    },
    /// A JSON object with exactly these keys.
    JsonObject {
        /// What the object describes (`a book`); it only phrases the instruction.
        subject: String,
        /// The keys the object must have, no more and no fewer, in any order.
        keys: Vec<String>,
    },
    /// A list numbered 1..=count.
    NumberedList {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Items the list must have, none of them empty.
        count: usize,
    },
    /// A list of exactly `count` bullets (`-`, `*` or `•`).
    BulletedList {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Bullets the list must have, none of them empty.
        count: usize,
    },
    /// A title wrapped in `<<` `>>`.
    Title {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
    },
    /// Exactly `count` paragraphs separated by `***` lines.
    Paragraphs {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Paragraphs wanted (at least 2), each of two words or more.
        count: usize,
    },
    /// Text ending with `phrase` (case and final punctuation ignored).
    EndWith {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// The closing phrase; case and final punctuation are ignored, and a word must come
        /// before it.
        phrase: String,
    },
    /// Text whose first word is `word`.
    StartWith {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// The first word (any case) of a text of at least three words.
        word: String,
    },
    /// A note followed by a line starting with `P.S.`.
    Postscript {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
    },
    /// Text using every keyword.
    IncludeKeywords {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Words the text must use, each as a whole word in any case.
        keywords: Vec<String>,
    },
    /// Text using `mention` but never `keyword`.
    AvoidKeyword {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Word the text must use.
        mention: String,
        /// Word the text must not use (as a whole word, any case).
        keyword: String,
    },
    /// Text of exactly `count` words.
    ExactWords {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Words the text must have.
        count: usize,
    },
    /// Text of at least `count` words.
    MinWords {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Fewest words.
        count: usize,
    },
    /// At most `count` words (and at least two: it describes something).
    MaxWords {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Most words.
        count: usize,
    },
    /// Text of exactly `count` sentences, as [`crate::text::sentence_count`] counts them.
    ExactSentences {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Sentences the text must have.
        count: usize,
    },
    /// `word` used at least `count` times.
    MentionTimes {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Word to repeat, counted as a whole word in any case.
        word: String,
        /// Fewest times it must occur.
        count: usize,
    },
    /// At least `count` words and no comma.
    NoCommas {
        /// What to write about; it only phrases the instruction (not checked).
        topic: String,
        /// Fewest words.
        count: usize,
    },
    /// Exactly one of the options named.
    ChooseWord {
        /// What the options are, in the plural (`fruits`); it only phrases the instruction.
        category: String,
        /// Words to choose from (at least two); the answer names exactly one of them.
        options: Vec<String>,
    },
    /// The sum of `numbers`.
    Sum {
        /// Numbers to add (at least one).
        numbers: Vec<i64>,
    },
    /// The product of `numbers`.
    Product {
        /// Numbers to multiply (at least one).
        numbers: Vec<i64>,
    },
    /// `minuend - subtrahend`.
    Difference {
        /// Number subtracted from.
        minuend: i64,
        /// Number subtracted.
        subtrahend: i64,
    },
    /// The number of letters in `word`.
    CountLetters {
        /// Word whose letters are counted (letters only, not digits or hyphens).
        word: String,
    },
    /// How often `letter` occurs in `word`.
    CountLetter {
        /// Word to search.
        word: String,
        /// Letter to count, in any case.
        letter: char,
    },
    /// `words` in alphabetical order.
    SortWords {
        /// Words to sort (at least two); case is ignored.
        words: Vec<String>,
    },
    /// `word` spelled backwards, as a whole word in any case.
    ReverseWord {
        /// Word to reverse.
        word: String,
    },
    /// `value` converted to the target unit of `conversion`.
    ConvertUnits {
        /// Quantity in the source unit.
        value: i64,
        /// Source and target units, with their integer factor.
        conversion: Conversion,
    },
    /// `word` written in capitals.
    UppercaseWord {
        /// Word to write in capitals.
        word: String,
    },
    /// The largest of `numbers`; as it is one of the given numbers, it must be the last
    /// number written.
    LargestNumber {
        /// Numbers to choose from (at least one).
        numbers: Vec<i64>,
    },
    /// The number of words in the answer to step `of`.
    CountWords {
        /// Earlier step (0-based index) whose answer is running text.
        of: usize,
    },
    /// The first item of the list of step `of`, in capitals.
    ListFirstItemCaps {
        /// Earlier step (0-based index) whose answer is a list.
        of: usize,
    },
    /// The last word of the answer to step `of`.
    RepeatLastWord {
        /// Earlier step (0-based index) whose answer is running text.
        of: usize,
    },
    /// The word chosen in step `of` (a [`StepSpec::ChooseWord`]), translated with `table`.
    TranslateWord {
        /// Earlier step (0-based index), a `choose_word` step.
        of: usize,
        /// Language of the translation (`French`); it only phrases the instruction.
        language: String,
        /// (word, translation) pairs; the answer must use the chosen word's translation and
        /// no other one.
        table: Vec<(String, String)>,
    },
    /// The number of items in the list of step `of`.
    CountListItems {
        /// Earlier step (0-based index) whose answer is a list.
        of: usize,
    },
    /// The number of letters in the word given in step `of`.
    CountLettersOfWord {
        /// Earlier step (0-based index) whose answer is one word.
        of: usize,
    },
    /// The sum of the numbers given in steps `of`.
    SumOfAnswers {
        /// Earlier steps (0-based indices, at least two) whose answers are numbers.
        of: Vec<usize>,
    },
    /// The number given in step `of` times `factor`.
    MultiplyAnswer {
        /// Earlier step (0-based index) whose answer is a number.
        of: usize,
        /// What that number is multiplied by.
        factor: i64,
    },
}

/// The pattern of every computation step: the steps whose answer
/// [`StepSpec::computed_number`] knows from their parameters alone. One list, so that
/// the answer writer and the checker cannot disagree about which steps compute.
macro_rules! computation_step {
    () => {
        $crate::step::StepSpec::Sum { .. }
            | $crate::step::StepSpec::Product { .. }
            | $crate::step::StepSpec::Difference { .. }
            | $crate::step::StepSpec::CountLetters { .. }
            | $crate::step::StepSpec::CountLetter { .. }
            | $crate::step::StepSpec::ConvertUnits { .. }
            | $crate::step::StepSpec::LargestNumber { .. }
    };
}
pub(crate) use computation_step;

impl StepSpec {
    /// The kind of this step, without its parameters.
    pub fn kind(&self) -> StepKind {
        use StepSpec as S;
        match self {
            S::AllCapitals { .. } => StepKind::AllCapitals,
            S::AllLowercase { .. } => StepKind::AllLowercase,
            S::DoubleQuotes { .. } => StepKind::DoubleQuotes,
            S::JsonObject { .. } => StepKind::JsonObject,
            S::NumberedList { .. } => StepKind::NumberedList,
            S::BulletedList { .. } => StepKind::BulletedList,
            S::Title { .. } => StepKind::Title,
            S::Paragraphs { .. } => StepKind::Paragraphs,
            S::EndWith { .. } => StepKind::EndWith,
            S::StartWith { .. } => StepKind::StartWith,
            S::Postscript { .. } => StepKind::Postscript,
            S::IncludeKeywords { .. } => StepKind::IncludeKeywords,
            S::AvoidKeyword { .. } => StepKind::AvoidKeyword,
            S::ExactWords { .. } => StepKind::ExactWords,
            S::MinWords { .. } => StepKind::MinWords,
            S::MaxWords { .. } => StepKind::MaxWords,
            S::ExactSentences { .. } => StepKind::ExactSentences,
            S::MentionTimes { .. } => StepKind::MentionTimes,
            S::NoCommas { .. } => StepKind::NoCommas,
            S::ChooseWord { .. } => StepKind::ChooseWord,
            S::Sum { .. } => StepKind::Sum,
            S::Product { .. } => StepKind::Product,
            S::Difference { .. } => StepKind::Difference,
            S::CountLetters { .. } => StepKind::CountLetters,
            S::CountLetter { .. } => StepKind::CountLetter,
            S::SortWords { .. } => StepKind::SortWords,
            S::ReverseWord { .. } => StepKind::ReverseWord,
            S::ConvertUnits { .. } => StepKind::ConvertUnits,
            S::UppercaseWord { .. } => StepKind::UppercaseWord,
            S::LargestNumber { .. } => StepKind::LargestNumber,
            S::CountWords { .. } => StepKind::CountWords,
            S::ListFirstItemCaps { .. } => StepKind::ListFirstItemCaps,
            S::RepeatLastWord { .. } => StepKind::RepeatLastWord,
            S::TranslateWord { .. } => StepKind::TranslateWord,
            S::CountListItems { .. } => StepKind::CountListItems,
            S::CountLettersOfWord { .. } => StepKind::CountLettersOfWord,
            S::SumOfAnswers { .. } => StepKind::SumOfAnswers,
            S::MultiplyAnswer { .. } => StepKind::MultiplyAnswer,
        }
    }

    /// The earlier steps this one acts on (empty unless dependent).
    pub fn references(&self) -> Vec<usize> {
        use StepSpec as S;
        match self {
            S::CountWords { of }
            | S::ListFirstItemCaps { of }
            | S::RepeatLastWord { of }
            | S::TranslateWord { of, .. }
            | S::CountListItems { of }
            | S::CountLettersOfWord { of }
            | S::MultiplyAnswer { of, .. } => vec![*of],
            S::SumOfAnswers { of } => of.clone(),
            _ => Vec::new(),
        }
    }

    /// The numbers written in the instruction itself: an answer may restate them.
    pub fn given_numbers(&self) -> Vec<i64> {
        use StepSpec as S;
        match self {
            S::Sum { numbers } | S::Product { numbers } | S::LargestNumber { numbers } => {
                numbers.clone()
            }
            S::Difference {
                minuend,
                subtrahend,
            } => vec![*minuend, *subtrahend],
            S::ConvertUnits { value, conversion } => vec![*value, conversion.factor()],
            S::MultiplyAnswer { factor, .. } => vec![*factor],
            _ => Vec::new(),
        }
    }

    /// The answer of a computation step, known from its parameters alone.
    pub fn computed_number(&self) -> Option<i64> {
        use StepSpec as S;
        match self {
            S::Sum { numbers } => Some(numbers.iter().sum()),
            S::Product { numbers } => Some(numbers.iter().product()),
            S::Difference {
                minuend,
                subtrahend,
            } => Some(minuend - subtrahend),
            S::CountLetters { word } => Some(crate::text::letter_count(word) as i64),
            S::CountLetter { word, letter } => {
                let letter = letter.to_lowercase().next().unwrap_or(*letter);
                Some(word.to_lowercase().chars().filter(|&c| c == letter).count() as i64)
            }
            S::ConvertUnits { value, conversion } => Some(value * conversion.factor()),
            S::LargestNumber { numbers } => numbers.iter().copied().max(),
            _ => None,
        }
    }

    /// Checks the parameters of step `index` of `steps` (references point to earlier
    /// steps of a kind they can act on; counts and lists are not empty).
    pub fn validate(&self, index: usize, steps: &[StepSpec]) -> Result<()> {
        let kind = self.kind();
        let refs = self.references();
        if refs.len() < kind.references_needed() {
            bail!(
                "step {index} ({}): needs {} earlier step(s) to act on, has {}",
                kind.name(),
                kind.references_needed(),
                refs.len()
            );
        }
        for r in refs {
            if r >= index {
                bail!(
                    "step {index} ({}): refers to step {r}, which does not come before it",
                    kind.name()
                );
            }
            if !kind.can_refer_to(steps[r].kind()) {
                bail!(
                    "step {index} ({}): cannot act on step {r} ({})",
                    kind.name(),
                    steps[r].kind().name()
                );
            }
        }
        use StepSpec as S;
        let fine = match self {
            S::JsonObject { keys, .. } => !keys.is_empty(),
            S::NumberedList { count, .. }
            | S::BulletedList { count, .. }
            | S::ExactWords { count, .. }
            | S::MinWords { count, .. }
            | S::ExactSentences { count, .. }
            | S::MentionTimes { count, .. }
            | S::NoCommas { count, .. } => *count >= 1,
            S::Paragraphs { count, .. } | S::MaxWords { count, .. } => *count >= 2,
            S::IncludeKeywords { keywords, .. } => !keywords.is_empty(),
            S::ChooseWord { options, .. } => options.len() >= 2,
            S::Sum { numbers } | S::Product { numbers } | S::LargestNumber { numbers } => {
                !numbers.is_empty()
            }
            S::SortWords { words } => words.len() >= 2,
            S::TranslateWord { table, .. } => !table.is_empty(),
            _ => true,
        };
        if !fine {
            bail!(
                "step {index} ({}): empty or too small parameter",
                kind.name()
            );
        }
        Ok(())
    }
}
