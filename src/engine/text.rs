//! The vocabulary every message is written in: the two languages, a text
//! in both, and a violation's message (its problem and its fix, apart).

use std::fmt;

use serde::Serialize;

/// Language of the messages a front end prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Lang {
    #[default]
    En,
    ZhCn,
}

impl Lang {
    /// `en`, `zh`, `zh-CN`, `zh_CN.UTF-8` ... anything else is English.
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.to_ascii_lowercase();
        if s.starts_with("zh") {
            Some(Lang::ZhCn)
        } else if s.starts_with("en") || s == "c" || s == "posix" {
            Some(Lang::En)
        } else {
            None
        }
    }
}

/// A language setting (`--lang`, `RESIDENCY_GUARD_LANG`) that names
/// neither language.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--lang {0:?}: use en or zh-CN")]
pub struct UnknownLang(pub String);

impl Lang {
    /// The language a setting names (`Lang::parse`), or why it names none.
    pub fn from_setting(s: &str) -> Result<Lang, UnknownLang> {
        Lang::parse(s).ok_or_else(|| UnknownLang(s.to_string()))
    }
}

/// One message in both languages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Text {
    pub en: String,
    #[serde(rename = "zh-CN")]
    pub zh: String,
}

impl Text {
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::ZhCn => &self.zh,
        }
    }

    /// The message in `lang` alone, without spare capacity.
    pub fn into_lang(self, lang: Lang) -> Box<str> {
        match lang {
            Lang::En => self.en.into_boxed_str(),
            Lang::ZhCn => self.zh.into_boxed_str(),
        }
    }
}

/// The English text: for logs and other English-only sinks. Pick a
/// language with `get` wherever a person reads the message.
impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.en)
    }
}

/// The languages messages are written in: both (the CLI, reports, the
/// audit's findings) or the one a webhook answer carries. A text's other
/// language is left empty, and its arguments are never formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Langs {
    pub en: bool,
    pub zh: bool,
}

impl Langs {
    pub const BOTH: Langs = Langs { en: true, zh: true };
    pub const NONE: Langs = Langs {
        en: false,
        zh: false,
    };

    pub fn only(lang: Lang) -> Langs {
        Langs {
            en: lang == Lang::En,
            zh: lang == Lang::ZhCn,
        }
    }

    /// Is anything written at all?
    pub fn any(self) -> bool {
        self.en || self.zh
    }

    /// A text in these languages; `en` and `zh` are formatted only if
    /// wanted (`format_args!` formats nothing until written).
    pub fn text(self, en: fmt::Arguments<'_>, zh: fmt::Arguments<'_>) -> Text {
        let mut out = Text::default();
        self.write(&mut out, en, zh);
        out
    }

    /// Append to each wanted language of `out`.
    pub fn write(self, out: &mut Text, en: fmt::Arguments<'_>, zh: fmt::Arguments<'_>) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        if self.en {
            let _ = out.en.write_fmt(en);
        }
        if self.zh {
            let _ = out.zh.write_fmt(zh);
        }
    }

    /// Append `text`'s wanted languages to `out`.
    pub fn push(self, out: &mut Text, text: &Text) {
        if self.en {
            out.en.push_str(&text.en);
        }
        if self.zh {
            out.zh.push_str(&text.zh);
        }
    }
}

/// What joins a problem and its fix when they are shown as one text.
const FIX_EN: &str = " Fix: ";
const FIX_ZH: &str = "修复：";

/// A violation's message: the problem and its fix, kept apart. Shown as one
/// text, "<problem> Fix: <fix>" ("<problem>修复：<fix>"), by the CLI, in
/// denials, Events and reports (serialised so, as `{en, zh-CN}`); the
/// webhook's warnings put the fix on its own line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// What is wrong and why it matters, ending in a full stop.
    pub problem: Text,
    /// What to change.
    pub fix: Text,
}

impl Message {
    /// The problem and the fix as one text in `lang`.
    pub fn get(&self, lang: Lang) -> String {
        let (problem, fix) = (self.problem.get(lang), self.fix.get(lang));
        if fix.is_empty() {
            return problem.to_string();
        }
        let joint = match lang {
            Lang::En => FIX_EN,
            Lang::ZhCn => FIX_ZH,
        };
        let mut out = String::with_capacity(problem.len() + joint.len() + fix.len());
        out.push_str(problem);
        out.push_str(joint);
        out.push_str(fix);
        out
    }

    /// The problem and the fix as one text, in both languages.
    pub fn text(&self) -> Text {
        Text {
            en: self.get(Lang::En),
            zh: self.get(Lang::ZhCn),
        }
    }

    /// The problem alone, in `lang`.
    pub fn problem(&self, lang: Lang) -> &str {
        self.problem.get(lang)
    }

    /// "Fix: <fix>" ("修复：<fix>") in `lang`; empty when there is no fix.
    pub fn fix_line(&self, lang: Lang) -> String {
        let fix = self.fix.get(lang);
        match lang {
            _ if fix.is_empty() => String::new(),
            Lang::En => format!("{}{fix}", FIX_EN.trim_start()),
            Lang::ZhCn => format!("{FIX_ZH}{fix}"),
        }
    }
}

/// As one text per language, exactly as `Text` serialises.
impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text().serialize(serializer)
    }
}

/// "a, b and c".
pub(crate) fn join_en<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
