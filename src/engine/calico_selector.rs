//! Calico's selector expression language, the subset this engine reads
//! safely (Calico reference, "Selectors" in the NetworkPolicy resource):
//! `all()`, `global()`, `has(k)`, `k == 'v'`, `k != 'v'`,
//! `k in {'a', 'b'}`, `k not in {...}`, `k starts with 'p'`,
//! `k ends with 's'`, `k contains 's'`, `!`, `&&`, `||` and parentheses.
//! Anything else is refused with a message naming what was not understood:
//! a selector read wrongly would judge the wrong pods, so the caller fails
//! closed on an error rather than guess.

use std::collections::BTreeMap;

/// A parsed Calico selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalicoSelector {
    All,
    /// `global()`: matches non-namespaced resources only; no pod.
    Global,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    StartsWith(String, String),
    EndsWith(String, String),
    Contains(String, String),
    Not(Box<CalicoSelector>),
    And(Box<CalicoSelector>, Box<CalicoSelector>),
    Or(Box<CalicoSelector>, Box<CalicoSelector>),
}

impl CalicoSelector {
    /// Parse a selector; the empty string selects everything, as in Calico.
    pub fn parse(text: &str) -> Result<CalicoSelector, String> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Ok(CalicoSelector::All);
        }
        let mut p = Parser { tokens, at: 0 };
        let sel = p.or()?;
        match p.tokens.get(p.at) {
            None => Ok(sel),
            Some(t) => Err(format!(
                "unexpected {} after a complete expression",
                t.describe()
            )),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        use CalicoSelector::*;
        match self {
            All => true,
            Global => false,
            Has(k) => labels.contains_key(k),
            Eq(k, v) => labels.get(k) == Some(v),
            // Calico: `k != 'v'` matches when the label is absent too.
            Ne(k, v) => labels.get(k) != Some(v),
            In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
            StartsWith(k, s) => labels.get(k).is_some_and(|x| x.starts_with(s.as_str())),
            EndsWith(k, s) => labels.get(k).is_some_and(|x| x.ends_with(s.as_str())),
            Contains(k, s) => labels.get(k).is_some_and(|x| x.contains(s.as_str())),
            Not(s) => !s.matches(labels),
            And(a, b) => a.matches(labels) && b.matches(labels),
            Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }

    /// The selector with every label key prefixed and `all()` and
    /// `global()` replaced: how Calico rewrites a rule's namespaceSelector
    /// (`pcns.` keys) and serviceAccounts selector (`pcsa.` keys) into the
    /// one selector it evaluates on endpoints and network sets.
    pub fn rewritten(
        &self,
        prefix: &str,
        all: &CalicoSelector,
        global: &CalicoSelector,
    ) -> CalicoSelector {
        use CalicoSelector::*;
        let key = |k: &str| format!("{prefix}{k}");
        let inner = |s: &CalicoSelector| Box::new(s.rewritten(prefix, all, global));
        match self {
            All => all.clone(),
            Global => global.clone(),
            Has(k) => Has(key(k)),
            Eq(k, v) => Eq(key(k), v.clone()),
            Ne(k, v) => Ne(key(k), v.clone()),
            In(k, vs) => In(key(k), vs.clone()),
            NotIn(k, vs) => NotIn(key(k), vs.clone()),
            StartsWith(k, s) => StartsWith(key(k), s.clone()),
            EndsWith(k, s) => EndsWith(key(k), s.clone()),
            Contains(k, s) => Contains(key(k), s.clone()),
            Not(s) => Not(inner(s)),
            And(a, b) => And(inner(a), inner(b)),
            Or(a, b) => Or(inner(a), inner(b)),
        }
    }

    /// Both must match.
    pub fn and(self, other: CalicoSelector) -> CalicoSelector {
        CalicoSelector::And(Box::new(self), Box::new(other))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Not,
    And,
    Or,
    EqEq,
    NotEq,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Str(s) => format!("string '{s}'"),
            Token::LParen => "'('".into(),
            Token::RParen => "')'".into(),
            Token::LBrace => "'{'".into(),
            Token::RBrace => "'}'".into(),
            Token::Comma => "','".into(),
            Token::Not => "'!'".into(),
            Token::And => "'&&'".into(),
            Token::Or => "'||'".into(),
            Token::EqEq => "'=='".into(),
            Token::NotEq => "'!='".into(),
        }
    }
}

/// Label keys may hold letters, digits, `-`, `_`, `.` and `/`.
fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Token::LParen),
            ')' => out.push(Token::RParen),
            '{' => out.push(Token::LBrace),
            '}' => out.push(Token::RBrace),
            ',' => out.push(Token::Comma),
            '&' | '|' | '=' => {
                let double = chars.next_if(|&(_, n)| n == c).is_some();
                match (c, double) {
                    ('&', true) => out.push(Token::And),
                    ('|', true) => out.push(Token::Or),
                    ('=', true) => out.push(Token::EqEq),
                    _ => {
                        return Err(format!(
                            "{c:?} at offset {i} is not an operator (use &&, || or ==)"
                        ));
                    }
                }
            }
            '!' => {
                if chars.next_if(|&(_, n)| n == '=').is_some() {
                    out.push(Token::NotEq);
                } else {
                    out.push(Token::Not);
                }
            }
            '\'' | '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => break,
                        Some((_, ch)) => s.push(ch),
                        None => {
                            return Err(format!("the string starting at offset {i} is not closed"));
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            c if is_ident_char(c) => {
                let mut s = String::from(c);
                while let Some((_, n)) = chars.next_if(|&(_, n)| is_ident_char(n)) {
                    s.push(n);
                }
                out.push(Token::Ident(s));
            }
            other => {
                return Err(format!(
                    "{other:?} at offset {i} is not part of the selector syntax read here"
                ));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, want: &Token) -> Result<(), String> {
        match self.next() {
            Some(t) if &t == want => Ok(()),
            Some(t) => Err(format!(
                "expected {} but found {}",
                want.describe(),
                t.describe()
            )),
            None => Err(format!(
                "expected {} but the selector ends",
                want.describe()
            )),
        }
    }

    fn or(&mut self) -> Result<CalicoSelector, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            let right = self.and()?;
            left = CalicoSelector::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<CalicoSelector, String> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            let right = self.unary()?;
            left = CalicoSelector::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<CalicoSelector, String> {
        match self.next() {
            Some(Token::Not) => Ok(CalicoSelector::Not(Box::new(self.unary()?))),
            Some(Token::LParen) => {
                let inner = self.or()?;
                self.expect(&Token::RParen)?;
                Ok(inner)
            }
            Some(Token::Ident(word)) => self.after_ident(word),
            Some(t) => Err(format!("unexpected {}", t.describe())),
            None => Err("the selector ends where an expression was expected".into()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s),
            Some(t) => Err(format!(
                "expected a quoted string but found {}",
                t.describe()
            )),
            None => Err("expected a quoted string but the selector ends".into()),
        }
    }

    fn call_without_args(&mut self, name: &str) -> Result<(), String> {
        self.expect(&Token::LParen)
            .and_then(|()| self.expect(&Token::RParen))
            .map_err(|e| format!("{name}(): {e}"))
    }

    fn after_ident(&mut self, word: String) -> Result<CalicoSelector, String> {
        let is_call = self.peek() == Some(&Token::LParen);
        match word.as_str() {
            "all" if is_call => {
                self.call_without_args("all")?;
                return Ok(CalicoSelector::All);
            }
            "global" if is_call => {
                self.call_without_args("global")?;
                return Ok(CalicoSelector::Global);
            }
            "has" if is_call => {
                self.at += 1;
                let key = match self.next() {
                    Some(Token::Ident(k)) => k,
                    Some(t) => {
                        return Err(format!(
                            "has(): expected a label key but found {}",
                            t.describe()
                        ));
                    }
                    None => return Err("has(): the selector ends".into()),
                };
                self.expect(&Token::RParen)?;
                return Ok(CalicoSelector::Has(key));
            }
            _ if is_call => {
                return Err(format!(
                    "{word}() is not a selector function read here (all, global, has)"
                ));
            }
            _ => {}
        }
        let key = word;
        match self.next() {
            Some(Token::EqEq) => Ok(CalicoSelector::Eq(key, self.string()?)),
            Some(Token::NotEq) => Ok(CalicoSelector::Ne(key, self.string()?)),
            Some(Token::Ident(op)) if op == "in" => Ok(CalicoSelector::In(key, self.set()?)),
            Some(Token::Ident(op)) if op == "not" => match self.next() {
                Some(Token::Ident(i)) if i == "in" => Ok(CalicoSelector::NotIn(key, self.set()?)),
                _ => Err(format!("after {key} not: expected `in`")),
            },
            Some(Token::Ident(op)) if op == "starts" || op == "ends" => {
                match self.next() {
                    Some(Token::Ident(w)) if w == "with" => {}
                    _ => return Err(format!("after {key} {op}: expected `with`")),
                }
                let s = self.string()?;
                Ok(if op == "starts" {
                    CalicoSelector::StartsWith(key, s)
                } else {
                    CalicoSelector::EndsWith(key, s)
                })
            }
            Some(Token::Ident(op)) if op == "contains" => {
                Ok(CalicoSelector::Contains(key, self.string()?))
            }
            Some(t) => Err(format!(
                "after label key {key}: {} is not an operator read here (==, !=, in, not in, starts with, ends with, contains)",
                t.describe()
            )),
            None => Err(format!("label key {key} is not followed by an operator")),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.expect(&Token::LBrace)?;
        let mut values = Vec::new();
        if self.peek() == Some(&Token::RBrace) {
            self.at += 1;
            return Ok(values);
        }
        loop {
            values.push(self.string()?);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::RBrace) => return Ok(values),
                Some(t) => {
                    return Err(format!(
                        "in a set: expected ',' or '}}' but found {}",
                        t.describe()
                    ));
                }
                None => return Err("a set is not closed with '}'".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_as_calico_documents() {
        let l = labels(&[
            ("app", "api"),
            ("tier", "web"),
            ("projectcalico.org/namespace", "prod"),
        ]);
        let cases = [
            ("", true),
            ("all()", true),
            ("global()", false),
            ("app == 'api'", true),
            ("app == \"db\"", false),
            ("app != 'db'", true),
            ("missing != 'x'", true),
            ("has(tier)", true),
            ("!has(tier)", false),
            ("app in {'api', 'db'}", true),
            ("app not in {'api'}", false),
            ("missing not in {'a'}", true),
            ("app starts with 'a'", true),
            ("app ends with 'i'", true),
            ("app contains 'p'", true),
            ("app == 'api' && tier == 'db'", false),
            ("app == 'x' || (tier == 'web' && has(app))", true),
            ("projectcalico.org/namespace == 'prod'", true),
            ("!(app == 'api')", false),
        ];
        for (text, want) in cases {
            let sel = CalicoSelector::parse(text).unwrap();
            assert_eq!(sel.matches(&l), want, "{text}");
        }
    }

    #[test]
    fn syntax_not_read_here_is_refused() {
        for bad in [
            "app = 'x'",
            "app == x",
            "app == 'x' &&",
            "(app == 'x'",
            "app in {'a' 'b'}",
            "app ~= 'x'",
            "app == 'x' extra",
            "serviceAccount == 'x' <",
            "app == 'unterminated",
            "nope()",
            "app not 'x'",
        ] {
            assert!(CalicoSelector::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
