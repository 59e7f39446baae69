//! Visual QA sources: VQAv2 questions + annotations (optionally joined with COCO
//! captions) and the easy-VQA package layout, read into [`VqaItem`]s with a caption per
//! image where one is known.
//!
//! * **VQAv2**: `{"questions": [{question_id, image_id, question}], "data_subtype"}`,
//!   `{"annotations": [{question_id, multiple_choice_answer, answers: [{answer}]}]}`,
//!   COCO captions `{"images": [{id, file_name}], "annotations": [{image_id, caption}]}`
//!   (the first caption of an image in file order is used). Image files are named by
//!   the captions file's `file_name`, else `COCO_<data_subtype>_<id:012>.jpg`, else
//!   `<id:012>.jpg`, whichever exists.
//! * **easy-VQA** (a split directory of the `easy_vqa` package, e.g.
//!   `easy_vqa/data/train`): `questions.json` is a list of `[question, answer,
//!   image_id]` and `images/<image_id>.png` the images. Each image holds one coloured
//!   shape; its caption ("a red triangle") is derived from that image's own questions
//!   and answers: an answer naming a shape or colour, a colour or shape named in a
//!   question whose answer is that image's shape or colour, and yes/no answers to
//!   "is there a … / is there not a …" questions (a shape or colour is also known when
//!   every other one was answered absent). When only one of the two is known the caption
//!   says so much ("a red shape", "a triangle"); images with neither get no caption.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{BuildError, Result};

/// The shapes easy-VQA draws; every other non-yes/no answer is a colour.
const EASY_VQA_SHAPES: [&str; 3] = ["circle", "rectangle", "triangle"];

/// One question about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VqaItem {
    /// The question's id (VQAv2 `question_id`; easy-VQA: position in `questions.json`).
    pub id: String,
    /// The image's id.
    pub image_id: String,
    /// The image file (absolute when the image directory could be resolved).
    pub image: PathBuf,
    /// The question.
    pub question: String,
    /// The answer trained on and matched against (VQAv2 `multiple_choice_answer`).
    pub answer: String,
    /// Every human answer (VQAv2: ten; easy-VQA: the one answer), for VQA accuracy.
    pub answers: Vec<String>,
}

/// Items with the captions of their images.
#[derive(Debug, Clone, Default)]
pub struct VqaSet {
    /// The questions, in file order.
    pub items: Vec<VqaItem>,
    /// Caption by image id, for the images that have one.
    pub captions: HashMap<String, String>,
}

impl VqaSet {
    /// The caption of `item`'s image, if known.
    pub fn caption(&self, item: &VqaItem) -> Option<&str> {
        self.captions.get(&item.image_id).map(String::as_str)
    }

    /// Number of distinct images.
    pub fn images(&self) -> usize {
        self.items
            .iter()
            .map(|i| i.image_id.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let file = std::fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let reader = std::io::BufReader::new(file);
    let mut de = serde_json::Deserializer::from_reader(reader);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        BuildError::content(path, format!("at `{at}`: {}", e.inner()))
    })
}

fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    let resolved = dir.canonicalize().map_err(|e| BuildError::io(dir, e))?;
    if !resolved.is_dir() {
        return Err(BuildError::content(dir, "is not a directory"));
    }
    Ok(resolved)
}

/// Reads an easy-VQA split directory (see the module documentation).
pub fn read_easy_vqa(split_dir: &Path) -> Result<VqaSet> {
    let split_dir = resolve_dir(split_dir)?;
    let questions_path = split_dir.join("questions.json");
    let raw: Vec<Value> = read_json(&questions_path)?;
    let mut items = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        let parsed = match entry.as_array().map(Vec::as_slice) {
            Some([Value::String(q), Value::String(a), id]) if id.is_u64() => {
                Some((q, a, id.to_string()))
            }
            _ => None,
        };
        let Some((question, answer, image_id)) = parsed else {
            return Err(BuildError::content(
                &questions_path,
                format!("record {index}: expected `[question, answer, image_id]` (two strings and a non-negative integer), found `{entry}`"),
            ));
        };
        items.push(VqaItem {
            id: index.to_string(),
            image: split_dir.join("images").join(format!("{image_id}.png")),
            image_id,
            question: question.clone(),
            answer: answer.clone(),
            answers: vec![answer.clone()],
        });
    }
    check_images_exist(&items)?;
    let captions = easy_vqa_captions(&items);
    Ok(VqaSet { items, captions })
}

fn check_images_exist(items: &[VqaItem]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for item in items {
        if seen.insert(item.image_id.as_str()) && !item.image.is_file() {
            return Err(BuildError::content(
                &item.image,
                format!(
                    "image `{}` of question `{}` does not exist",
                    item.image_id, item.id
                ),
            ));
        }
    }
    Ok(())
}

/// What the questions about one easy-VQA image say: `true` present, `false` absent.
#[derive(Default)]
struct ImageFacts(BTreeMap<String, bool>);

impl ImageFacts {
    fn learn(&mut self, question: &str, answer: &str, colours: &BTreeSet<&str>) {
        let is_known = |w: &str| EASY_VQA_SHAPES.contains(&w) || colours.contains(w);
        let lower = question.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let named = words.iter().copied().find(|w| is_known(w));
        match answer {
            "yes" | "no" => {
                let negated = words.contains(&"not") || lower.starts_with("is no ");
                if let Some(named) = named {
                    self.0
                        .insert(named.to_string(), (answer == "yes") != negated);
                }
            }
            value if is_known(value) => {
                self.0.insert(value.to_string(), true);
                if let Some(named) = named {
                    self.0.insert(named.to_string(), true);
                }
            }
            _ => {}
        }
    }

    /// The one present value among `candidates`, else the only one not ruled out.
    fn pick<'a>(&self, candidates: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
        let present: Vec<&str> = candidates
            .clone()
            .filter(|c| self.0.get(*c) == Some(&true))
            .collect();
        match present.as_slice() {
            [one] => Some(one),
            [] => {
                let open: Vec<&str> = candidates
                    .filter(|c| self.0.get(*c) != Some(&false))
                    .collect();
                (open.len() == 1).then(|| open[0])
            }
            _ => None,
        }
    }
}

fn easy_vqa_captions(items: &[VqaItem]) -> HashMap<String, String> {
    let colours: BTreeSet<&str> = items
        .iter()
        .map(|i| i.answer.as_str())
        .filter(|a| !matches!(*a, "yes" | "no") && !EASY_VQA_SHAPES.contains(a))
        .collect();
    let mut facts: BTreeMap<&str, ImageFacts> = BTreeMap::new();
    for item in items {
        facts
            .entry(&item.image_id)
            .or_default()
            .learn(&item.question, &item.answer, &colours);
    }
    facts
        .into_iter()
        .filter_map(|(image, facts)| {
            let shape = facts.pick(EASY_VQA_SHAPES.iter().copied());
            let colour = facts.pick(colours.iter().copied());
            let caption = match (colour, shape) {
                (Some(colour), Some(shape)) => format!("a {colour} {shape}"),
                (Some(colour), None) => format!("a {colour} shape"),
                (None, Some(shape)) => format!("a {shape}"),
                (None, None) => return None,
            };
            Some((image.to_string(), caption))
        })
        .collect()
}

/// Where a visual QA set comes from.
#[derive(Debug, Clone)]
pub enum VqaSource {
    /// An easy-VQA split directory ([`read_easy_vqa`]).
    EasyVqa(PathBuf),
    /// VQAv2 questions and annotations with COCO images and captions ([`read_vqav2`]).
    Vqav2(Vqav2Files),
}

impl VqaSource {
    /// Reads the set.
    pub fn read(&self) -> Result<VqaSet> {
        match self {
            Self::EasyVqa(dir) => read_easy_vqa(dir),
            Self::Vqav2(files) => read_vqav2(files),
        }
    }
}

/// The files of a VQAv2-style set.
#[derive(Debug, Clone)]
pub struct Vqav2Files {
    /// VQAv2 questions JSON.
    pub questions: PathBuf,
    /// VQAv2 annotations JSON.
    pub annotations: PathBuf,
    /// The directory holding the images.
    pub images: PathBuf,
    /// COCO captions JSON (needed for caption-then-answer training data).
    pub captions: Option<PathBuf>,
}

#[derive(Deserialize)]
struct QuestionsFile {
    questions: Vec<Question>,
    #[serde(default)]
    data_subtype: Option<String>,
}

#[derive(Deserialize)]
struct Question {
    question_id: u64,
    image_id: u64,
    question: String,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct Annotation {
    question_id: u64,
    #[serde(default)]
    multiple_choice_answer: Option<String>,
    #[serde(default)]
    answers: Vec<HumanAnswer>,
}

#[derive(Deserialize)]
struct HumanAnswer {
    answer: String,
}

#[derive(Deserialize)]
struct CaptionsFile {
    #[serde(default)]
    images: Vec<CocoImage>,
    annotations: Vec<CocoCaption>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoCaption {
    image_id: u64,
    caption: String,
}

/// Reads a VQAv2-style set (see the module documentation).
pub fn read_vqav2(files: &Vqav2Files) -> Result<VqaSet> {
    let images_dir = resolve_dir(&files.images)?;
    let questions: QuestionsFile = read_json(&files.questions)?;
    let annotations: AnnotationsFile = read_json(&files.annotations)?;
    let mut by_question: HashMap<u64, Annotation> = HashMap::new();
    for annotation in annotations.annotations {
        by_question.insert(annotation.question_id, annotation);
    }
    let (file_names, captions) = match &files.captions {
        Some(path) => {
            let file: CaptionsFile = read_json(path)?;
            let names: HashMap<u64, String> = file
                .images
                .into_iter()
                .map(|i| (i.id, i.file_name))
                .collect();
            let mut captions = HashMap::new();
            for c in file.annotations {
                captions
                    .entry(c.image_id.to_string())
                    .or_insert_with(|| c.caption.trim().to_string());
            }
            (names, captions)
        }
        None => (HashMap::new(), HashMap::new()),
    };

    let mut image_paths: HashMap<u64, PathBuf> = HashMap::new();
    let mut items = Vec::with_capacity(questions.questions.len());
    for (index, q) in questions.questions.into_iter().enumerate() {
        let annotation = by_question.remove(&q.question_id).ok_or_else(|| {
            BuildError::content(
                &files.annotations,
                format!(
                    "has no annotation for question {} (record {index} of `{}`)",
                    q.question_id,
                    files.questions.display()
                ),
            )
        })?;
        let answers: Vec<String> = annotation.answers.into_iter().map(|a| a.answer).collect();
        let answer = match annotation.multiple_choice_answer {
            Some(answer) => answer,
            None => most_common(&answers).ok_or_else(|| {
                BuildError::content(
                    &files.annotations,
                    format!(
                        "question {}: neither `multiple_choice_answer` nor `answers` is given",
                        q.question_id
                    ),
                )
            })?,
        };
        let image = match image_paths.get(&q.image_id) {
            Some(path) => path.clone(),
            None => {
                let path = find_image(
                    &images_dir,
                    q.image_id,
                    file_names.get(&q.image_id),
                    questions.data_subtype.as_deref(),
                )?;
                image_paths.insert(q.image_id, path.clone());
                path
            }
        };
        items.push(VqaItem {
            id: q.question_id.to_string(),
            image_id: q.image_id.to_string(),
            image,
            question: q.question,
            answers: if answers.is_empty() {
                vec![answer.clone()]
            } else {
                answers
            },
            answer,
        });
    }
    Ok(VqaSet { items, captions })
}

fn find_image(
    dir: &Path,
    image_id: u64,
    file_name: Option<&String>,
    subtype: Option<&str>,
) -> Result<PathBuf> {
    let mut names = Vec::new();
    if let Some(name) = file_name {
        names.push(name.clone());
    }
    if let Some(subtype) = subtype {
        names.push(format!("COCO_{subtype}_{image_id:012}.jpg"));
    }
    names.push(format!("{image_id:012}.jpg"));
    names
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            BuildError::content(
                dir,
                format!(
                    "no file for image {image_id} (tried {})",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

/// The most frequent answer (the first one among equals).
fn most_common(answers: &[String]) -> Option<String> {
    let mut counts: Vec<(&String, usize)> = Vec::new();
    for answer in answers {
        match counts.iter_mut().find(|(a, _)| *a == answer) {
            Some((_, n)) => *n += 1,
            None => counts.push((answer, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts
        .into_iter()
        .find(|(_, n)| *n == best)
        .map(|(a, _)| a.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(image: &str, question: &str, answer: &str) -> VqaItem {
        VqaItem {
            id: String::new(),
            image_id: image.into(),
            image: PathBuf::new(),
            question: question.into(),
            answer: answer.into(),
            answers: vec![answer.into()],
        }
    }

    #[test]
    fn easy_vqa_captions_come_from_each_images_own_answers() {
        let items = [
            // image 0: colour from an answer, shape from the colour question's subject.
            item("0", "what color is the triangle?", "red"),
            // image 1: shape from an answer, colour from the question naming it.
            item("1", "what is the blue shape?", "circle"),
            // image 2: negated yes/no answers rule out two shapes, a plain one gives the colour.
            item("2", "is there not a circle?", "yes"),
            item("2", "does the image contain a rectangle?", "no"),
            item("2", "is a green shape present?", "yes"),
            // image 3: only the colour is known.
            item("3", "what color is the shape?", "green"),
            // image 4: nothing is known.
            item("4", "is there a red shape?", "no"),
            item("5", "what color is the shape?", "blue"),
        ];
        let captions = easy_vqa_captions(&items);
        assert_eq!(captions["0"], "a red triangle");
        assert_eq!(captions["1"], "a blue circle");
        assert_eq!(captions["2"], "a green triangle");
        assert_eq!(captions["3"], "a green shape");
        assert!(!captions.contains_key("4"));
        assert_eq!(captions["5"], "a blue shape");
    }

    #[test]
    fn most_common_prefers_the_first_of_equals() {
        let answers: Vec<String> = ["2", "two", "two", "2"].map(String::from).to_vec();
        assert_eq!(most_common(&answers).as_deref(), Some("2"));
        assert_eq!(most_common(&[]), None);
    }
}
