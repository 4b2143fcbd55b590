//! What every violation message about one workload under one policy is
//! written from: the workload, the policy, the classes it governs and
//! where they are declared, and the subject sentence, written once per
//! workload and shared by its policies.

use std::cell::RefCell;
use std::rc::Rc;

use super::Workload;
use super::text::{Langs, Text, join_en};
use super::verdict::ClassSource;
use crate::api::{DATA_CLASS_LABEL, DataClass};

/// What every message about this workload and policy needs.
pub(crate) struct MessageContext<'a> {
    /// The languages violation messages are written in (none: messages
    /// left empty, `Detail::Decision`).
    pub langs: Langs,
    pub workload: &'a Workload,
    pub policy: &'a str,
    pub classes: &'a [DataClass],
    pub sources: &'a [ClassSource],
    pub subjects: &'a Subjects,
}

/// Subjects already written for one workload, by the classes they name:
/// the policies governing a workload mostly match the same classes, so
/// each violation need not write the same sentence again.
#[derive(Default)]
pub(crate) struct Subjects(RefCell<Vec<(Vec<DataClass>, Rc<Text>)>>);

impl MessageContext<'_> {
    /// "Deployment payments/api carries personal information
    /// (residencyguard.io/data-class=personal on the pod template)"
    pub(crate) fn subject(&self) -> Rc<Text> {
        let mut cache = self.subjects.0.borrow_mut();
        if let Some((_, text)) = cache.iter().find(|(c, _)| c.as_slice() == self.classes) {
            return Rc::clone(text);
        }
        let text = Rc::new(self.write_subject());
        cache.push((self.classes.to_vec(), Rc::clone(&text)));
        text
    }

    fn write_subject(&self) -> Text {
        let w = self.workload.reference();
        let langs = self.langs;
        let en_classes = if langs.en {
            join_en(self.classes.iter().map(|c| c.describe_en()))
        } else {
            String::new()
        };
        let zh_classes = if langs.zh {
            self.classes
                .iter()
                .map(|c| c.describe_zh())
                .collect::<Vec<_>>()
                .join("、")
        } else {
            String::new()
        };
        let mut text = langs.text(
            format_args!("{w} carries {en_classes}"),
            format_args!("{w} 处理{zh_classes}"),
        );
        match self.sources.first() {
            Some(ClassSource {
                location,
                value,
                inherited_from: Some(owner),
            }) => langs.write(
                &mut text,
                format_args!(
                    " ({DATA_CLASS_LABEL}={value} on {location} of {owner}, inherited through its controller ownerReferences)"
                ),
                format_args!(
                    "（{DATA_CLASS_LABEL}={value}，位于 {owner} 的 {location}，经控制者 ownerReferences 继承）"
                ),
            ),
            Some(s) => langs.write(
                &mut text,
                format_args!(" ({DATA_CLASS_LABEL}={} on {})", s.value, s.location),
                format_args!("（{DATA_CLASS_LABEL}={}，位于 {}）", s.value, s.location),
            ),
            None => {}
        }
        text
    }
}
