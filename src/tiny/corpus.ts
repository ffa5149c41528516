// Synthetic training corpora for the tiny target: chat about a generated world (facts to memorise plus
// free variation in phrasing) and short arithmetic word problems with a <think> trace (regular enough
// for a ~1.5M-parameter model to solve). Records are ShareGPT, so the normal data path reads them.
import { Rng } from '../util/random.ts';
import { makeWorld, streamSeed, type Person, type World } from './world.ts';

export interface Turn {
  from: 'human' | 'gpt';
  value: string;
}

export interface ChatRecord {
  id: string;
  conversations: Turn[];
}

export interface ReasoningRecord extends ChatRecord {
  /** The final answer, as written after "#### ". */
  answer: string;
  /** Offset in the gpt value of the answer's digits in the last operation's step ("x - c = y."). */
  answer_char: number;
  /** Index of that step among the thinking steps (step 0 is the opening). */
  answer_step: number;
  /** Re-checking steps after the answer was derived (what an early exit could skip). */
  redundant_steps: number;
}

// ---------------------------------------------------------------- helpers

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

/** An index drawn with the given relative weights. */
function weighted(rng: Rng, weights: readonly number[]): number {
  let r = rng.next() * weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < weights.length; i++) if ((r -= weights[i]) < 0) return i;
  return weights.length - 1;
}

const cap = (s: string) => s[0].toUpperCase() + s.slice(1);
const withArticle = (noun: string) => (/^[aeiou]/.test(noun) ? 'an ' : 'a ') + noun;

/** Fills {key} placeholders; a missing key is a bug in a template, so it throws. */
function fill(template: string, vars: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => {
    if (!(k in vars)) throw new Error(`template ${JSON.stringify(template)}: no value for {${k}}`);
    return vars[k];
  });
}

/** "Alice", "Alice and Bob", "Alice, Bob and Tom". */
function listNames(names: string[]): string {
  return names.length <= 1 ? names.join('') : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

// ---------------------------------------------------------------- chat

type PersonKind = 'city' | 'job' | 'pet' | 'hasPet' | 'colour' | 'age' | 'about';
type GroupKind = 'whoCity' | 'whoJob';
const PERSON_KINDS: PersonKind[] = ['city', 'job', 'pet', 'hasPet', 'colour', 'age', 'about'];
const ALL_KINDS: (PersonKind | GroupKind)[] = [...PERSON_KINDS, 'whoCity', 'whoJob'];

// Questions naming the person ({N}) and follow-ups by pronoun ({s} she/he, {o} her/him, {p} her/his).
const NAMED_Q: Record<PersonKind, string[]> = {
  city: ['Where does {N} live?', 'Which city is {N} from?', 'In which city does {N} live?', 'Where is {N} from?'],
  job: ['What does {N} do for a living?', "What is {N}'s job?", 'What does {N} work as?', "What is {N}'s profession?"],
  pet: ['What pet does {N} have?', 'Which animal does {N} keep?', "What is {N}'s pet?"],
  hasPet: ['Does {N} have {aA}?', 'Does {N} own {aA}?', "Is {N}'s pet {aA}?"],
  colour: ["What is {N}'s favourite colour?", 'Which colour does {N} like best?', 'What colour does {N} like most?'],
  age: ['How old is {N}?', "What is {N}'s age?", 'How many years old is {N}?'],
  about: ['Tell me about {N}.', 'Who is {N}?', 'What do you know about {N}?'],
};
const PRONOUN_Q: Record<PersonKind, string[]> = {
  city: ['And where does {s} live?', 'Which city is {s} from?', 'Where is {s} from?'],
  job: ['And what is {p} job?', 'What does {s} do for a living?', 'What does {s} work as?'],
  pet: ['What pet does {s} have?', 'And what about {p} pet?', 'Which animal does {s} keep?'],
  hasPet: ['Does {s} have {aA}?', 'And does {s} own {aA}?'],
  colour: ['And what is {p} favourite colour?', 'Which colour does {s} like best?'],
  age: ['How old is {s}?', 'And what is {p} age?'],
  about: ['Tell me more about {o}.', 'What else do you know about {o}?'],
};
const OTHER_PERSON_Q = ['What about {N}?', 'And {N}?'];

// Answers. {R}/{r}: the person as name or pronoun (capitalised / not); {Rp}: "Alice's" or "Her".
const ANSWERS: Record<Exclude<PersonKind, 'hasPet' | 'about'>, string[]> = {
  city: ['{R} lives in {C}.', '{R} is from {C}.', '{R} lives in {C}, where {s} works as {aJ}.', '{Rp} home is in {C}.'],
  job: ['{R} is {aJ}.', '{R} works as {aJ}.', '{R} works as {aJ} in {C}.', '{R} is {aJ} by profession.'],
  pet: ['{R} has {aP}.', '{R} keeps {aP} as a pet.', '{Rp} pet is {aP}.'],
  colour: ['{Rp} favourite colour is {Col}.', '{R} likes {Col} best.', '{R} loves the colour {Col}.'],
  age: ['{R} is {A} years old.', '{R} is {A}.', '{R} is {A} years old and lives in {C}.'],
};
const HAS_PET_YES = ['Yes, {r} has {aP}.', 'Yes. {R} has {aP}.', 'Yes, {r} keeps {aP} as a pet.'];
const HAS_PET_NO = ['No, {r} has {aP}.', 'No, {r} has {aP}, not {aA}.', 'No. {R} keeps {aP}.'];
// One short sentence per fact, for "Tell me about X." (2-4 of them in random order).
const ABOUT_FACTS = [
  '{R} lives in {C}.',
  '{R} works as {aJ}.',
  '{R} is {A} years old.',
  '{R} has {aP}.',
  '{Rp} favourite colour is {Col}.',
];

const WHO_CITY_Q = ['Who lives in {C}?', 'Which people live in {C}?', 'Who is from {C}?'];
const WHO_CITY_NEXT = ['What about {C}?', 'And who lives in {C}?'];
const WHO_CITY_A = {
  none: ['Nobody lives in {C}.', 'No one I know lives in {C}.'],
  one: ['{L} lives in {C}.', 'Only {L} lives in {C}.'],
  many: ['{L} live in {C}.', 'The people in {C} are {L}.'],
};
const WHO_JOB_Q = ['Who works as {aJ}?', 'Which people work as {Js}?', 'Who is {aJ}?'];
const WHO_JOB_NEXT = ['What about {Js}?', 'And who works as {aJ}?'];
const WHO_JOB_A = {
  none: ['Nobody works as {aJ}.', 'No one I know is {aJ}.'],
  one: ['{L} works as {aJ}.', 'Only {L} is {aJ}.'],
  many: ['{L} work as {Js}.', 'The {Js} are {L}.'],
};

/** What the conversation is about, so follow-ups ("And her job?", "What about Bob?") resolve. */
interface Topic {
  kind: PersonKind | GroupKind;
  person?: Person;
  animal?: string; // hasPet: the animal asked about
  place?: string; // whoCity / whoJob: the city or job asked about
}

function pronouns(p: Person) {
  return p.gender === 'female' ? { s: 'she', o: 'her', p: 'her' } : { s: 'he', o: 'him', p: 'his' };
}

/** Placeholder values for person `p`; the referent is the name or a pronoun, chosen at random. */
function personVars(p: Person, animal: string | undefined, byName: boolean): Record<string, string> {
  const pr = pronouns(p);
  return {
    N: p.name,
    s: pr.s,
    o: pr.o,
    p: pr.p,
    R: byName ? p.name : cap(pr.s),
    r: byName ? p.name : pr.s,
    Rp: byName ? `${p.name}'s` : cap(pr.p),
    C: p.city,
    aJ: withArticle(p.job),
    aP: withArticle(p.pet),
    Col: p.colour,
    A: String(p.age),
    aA: withArticle(animal ?? p.pet),
  };
}

function answerPerson(rng: Rng, t: Topic): string {
  const p = t.person!;
  const vars = personVars(p, t.animal, rng.int(2) === 0);
  if (t.kind === 'hasPet') return fill(pick(rng, t.animal === p.pet ? HAS_PET_YES : HAS_PET_NO), vars);
  if (t.kind === 'about') {
    const facts = rng.shuffle([...ABOUT_FACTS]).slice(0, 2 + rng.int(3));
    // Only the first sentence may name the person; the rest refer back by pronoun.
    const rest = personVars(p, t.animal, false);
    return facts.map((f, i) => fill(f, i === 0 ? vars : rest)).join(' ');
  }
  return fill(pick(rng, ANSWERS[t.kind as keyof typeof ANSWERS]), vars);
}

/** {C} a city, or {aJ}/{Js} a job ("a baker", "bakers"). */
function groupVars(place: string): Record<string, string> {
  return { C: place, aJ: withArticle(place), Js: place + 's' };
}

function answerGroup(rng: Rng, world: World, t: Topic): string {
  const place = t.place!;
  const byCity = t.kind === 'whoCity';
  const names = rng.shuffle(world.people.filter((p) => (byCity ? p.city : p.job) === place).map((p) => p.name));
  const forms = byCity ? WHO_CITY_A : WHO_JOB_A;
  const form = names.length === 0 ? forms.none : names.length === 1 ? forms.one : forms.many;
  return fill(pick(rng, form), { L: listNames(names), ...groupVars(place) });
}

/** A fresh topic: any kind, any person / city / job. */
function freshTopic(rng: Rng, world: World): Topic {
  const kind = pick(rng, ALL_KINDS);
  if (kind === 'whoCity') return { kind, place: pick(rng, world.cities) };
  if (kind === 'whoJob') return { kind, place: pick(rng, world.jobs) };
  const person = pick(rng, world.people);
  // Half the yes/no pet questions name the right animal, so "Yes" and "No" are about equally likely.
  const animal = kind === 'hasPet' ? (rng.int(2) === 0 ? person.pet : pick(rng, world.pets)) : undefined;
  return { kind, person, animal };
}

/** The next question (and its topic), given the previous topic (none for the first turn). */
function nextQuestion(rng: Rng, world: World, prev: Topic | null): { q: string; topic: Topic } {
  const r = rng.next();
  if (prev?.person && r < 0.5) {
    // Same person, another fact, by pronoun.
    const kind = pick(
      rng,
      PERSON_KINDS.filter((k) => k !== prev.kind),
    );
    const p = prev.person;
    const animal = kind === 'hasPet' ? (rng.int(2) === 0 ? p.pet : pick(rng, world.pets)) : undefined;
    return { q: fill(pick(rng, PRONOUN_Q[kind]), personVars(p, animal, false)), topic: { kind, person: p, animal } };
  }
  if (prev?.person && r < 0.75) {
    // Same question about someone else: only the context says what is asked.
    const others = world.people.filter((x) => x !== prev.person);
    const p = pick(rng, others);
    return { q: fill(pick(rng, OTHER_PERSON_Q), { N: p.name }), topic: { ...prev, person: p } };
  }
  if (prev?.place && r < 0.5) {
    const pool = prev.kind === 'whoCity' ? world.cities : world.jobs;
    const place = pick(
      rng,
      pool.filter((x) => x !== prev.place),
    );
    const next = prev.kind === 'whoCity' ? WHO_CITY_NEXT : WHO_JOB_NEXT;
    return { q: fill(pick(rng, next), groupVars(place)), topic: { kind: prev.kind, place } };
  }
  const topic = freshTopic(rng, world);
  if (topic.place) {
    const qs = topic.kind === 'whoCity' ? WHO_CITY_Q : WHO_JOB_Q;
    return { q: fill(pick(rng, qs), groupVars(topic.place)), topic };
  }
  const vars = personVars(topic.person!, topic.animal, true);
  return { q: fill(pick(rng, NAMED_Q[topic.kind as PersonKind]), vars), topic };
}

const TURN_WEIGHTS = [8, 4, 2, 1];

/** A 1-4 turn conversation about the world; every answer is true of `world`. */
export function chatConversation(world: World, rng: Rng, id: string): ChatRecord {
  // Short conversations are the most common; this keeps the corpus near its size and token budget.
  const turns = 1 + weighted(rng, TURN_WEIGHTS);
  const conversations: Turn[] = [];
  let topic: Topic | null = null;
  for (let i = 0; i < turns; i++) {
    const next = nextQuestion(rng, world, topic);
    topic = next.topic;
    const answer = topic.person ? answerPerson(rng, topic) : answerGroup(rng, world, topic);
    conversations.push({ from: 'human', value: next.q }, { from: 'gpt', value: answer });
  }
  return { id, conversations };
}

// ---------------------------------------------------------------- reasoning

const ITEMS: [string, string][] = [
  ['apple', 'apples'],
  ['pencil', 'pencils'],
  ['marble', 'marbles'],
  ['cookie', 'cookies'],
  ['sticker', 'stickers'],
  ['book', 'books'],
  ['coin', 'coins'],
  ['card', 'cards'],
  ['shell', 'shells'],
  ['balloon', 'balloons'],
];
// Few verbs, each with a fixed sign, so the operation is easy to read off the prompt.
const GAIN = ['buys {n} more', 'finds {n} more', 'gets {n} more'];
const LOSE = ['gives away {n}', 'loses {n}', 'sells {n}'];
const FINAL = ['{N} has {y} {items} now.', 'So {N} has {y} {items} now.'];
const MAX_VALUE = 30; // few distinct "x ± n = y" facts (about 470), so a 0.9M-parameter target learns them all
// How many re-checks follow the derived answer is a habit tied to the kind of item (0-5, mean 2.1), in a
// fixed order: a target can then learn exactly when its thinking stops, so greedy decoding reproduces the
// redundancy (a random count would leave greedy decoding unsure when to close </think>).
const CHECKS_BY_ITEM = [0, 1, 2, 3, 4, 5, 2, 1, 3, 0];
const OPS_WEIGHTS = [3, 3, 2]; // 2, 3 or 4 operations

interface Op {
  sign: '+' | '-';
  n: number;
  from: number;
  to: number;
}

/** A 2-4 step +/- word problem whose gpt turn thinks step by step, then re-checks 0-5 times. */
export function reasoningProblem(world: World, rng: Rng, id: string): ReasoningRecord {
  const name = pick(rng, world.people).name;
  const item = rng.int(ITEMS.length);
  const [one, many] = ITEMS[item];
  const items = (k: number) => (k === 1 ? one : many);
  const a = 2 + rng.int(14);
  const ops: Op[] = [];
  let x = a;
  for (let k = 2 + weighted(rng, OPS_WEIGHTS); k > 0; k--) {
    // Subtract only what is there, add only up to the cap: values stay in 0..MAX_VALUE.
    let sign: '+' | '-' = rng.int(2) === 0 ? '+' : '-';
    if (sign === '-' && x < 1) sign = '+';
    if (sign === '+' && x >= MAX_VALUE) sign = '-';
    const room = sign === '+' ? MAX_VALUE - x : x;
    const n = 1 + rng.int(Math.min(9, room));
    const to = sign === '+' ? x + n : x - n;
    ops.push({ sign, n, from: x, to });
    x = to;
  }
  const y = x;
  const last = ops[ops.length - 1];

  const actions = ops.map((o) => fill(pick(rng, o.sign === '+' ? GAIN : LOSE), { n: String(o.n) }));
  const question = `${name} has ${a} ${many}. ${name} ${actions.join(', then ')}. How many ${many} does ${name} have now?`;

  // Each step quotes its clause from the prompt before the arithmetic: finding the next clause is then a copy
  // of what follows the previous one (an induction pattern a small model learns), not counting clauses.
  const steps = [`${name} starts with ${a} ${many}.`, ...ops.map((o, i) => `${actions[i]}: ${o.from} ${o.sign} ${o.n} = ${o.to}.`)];
  const answerStep = steps.length - 1;
  const checks = [
    // Undo the last operation.
    last.sign === '+' ? `Check: ${y} - ${last.n} = ${last.from}.` : `Check: ${y} + ${last.n} = ${last.from}.`,
    `So ${name} has ${y} ${items(y)}.`,
    `Let me recount: ${a} ${ops.map((o) => `${o.sign} ${o.n}`).join(' ')} = ${y}.`,
    `The answer is ${y}.`,
    `That makes ${y}.`,
  ];
  const redundant = checks.slice(0, CHECKS_BY_ITEM[item]);
  steps.push(...redundant);

  const head = '<think>\n';
  const value =
    head + steps.join('\n\n') + '\n</think>\n\n' + fill(pick(rng, FINAL), { N: name, y: String(y), items: items(y) }) + `\n#### ${y}`;
  // The answer's digits close the last operation's step: "... = y."
  const stepStart = head.length + steps.slice(0, answerStep).reduce((s, t) => s + t.length + 2, 0);
  const answerChar = stepStart + steps[answerStep].lastIndexOf(' = ') + 3;
  return {
    id,
    conversations: [
      { from: 'human', value: question },
      { from: 'gpt', value },
    ],
    answer: String(y),
    answer_char: answerChar,
    answer_step: answerStep,
    redundant_steps: redundant.length,
  };
}

// ---------------------------------------------------------------- splits

export interface CorpusOptions {
  seed: number;
  chatTrain: number;
  chatEval: number;
  reasoningTrain: number;
  reasoningEval: number;
}

export interface Corpus {
  world: World;
  chatTrain: ChatRecord[];
  chatEval: ChatRecord[];
  reasoningTrain: ReasoningRecord[];
  reasoningEval: ReasoningRecord[];
}

/** The prompt side of a record: its human turns, one per line. */
export function promptOf(r: ChatRecord): string {
  return r.conversations
    .filter((t) => t.from === 'human')
    .map((t) => t.value)
    .join('\n');
}

// Stream 0 is the world (see makeWorld); each split draws from its own stream, so changing one
// split's size leaves the others unchanged.
const STREAMS = { chatEval: 1, reasoningEval: 2, chatTrain: 3, reasoningTrain: 4 } as const;
const MAX_TRIES = 10_000;

function split<R extends ChatRecord>(
  n: number,
  rng: Rng,
  name: string,
  make: (rng: Rng, id: string) => R,
  banned: Set<string> | null,
): R[] {
  const out: R[] = [];
  for (let i = 0; i < n; i++) {
    const id = `${name}-${i}`;
    let rec = make(rng, id);
    // Held-out prompts must stay unseen: redraw any train record that repeats one.
    for (let tries = 1; banned?.has(promptOf(rec)); tries++) {
      if (tries >= MAX_TRIES) throw new Error(`${id}: cannot draw a prompt outside the eval split`);
      rec = make(rng, id);
    }
    out.push(rec);
  }
  return out;
}

export function generateCorpus(opts: CorpusOptions): Corpus {
  const world = makeWorld(opts.seed);
  const rng = (s: number) => new Rng(streamSeed(opts.seed, s));
  const chat = (r: Rng, id: string) => chatConversation(world, r, id);
  const reason = (r: Rng, id: string) => reasoningProblem(world, r, id);
  // Eval first, so train can be filtered against it.
  const chatEval = split(opts.chatEval, rng(STREAMS.chatEval), 'ce', chat, null);
  const reasoningEval = split(opts.reasoningEval, rng(STREAMS.reasoningEval), 're', reason, null);
  const banned = new Set([...chatEval, ...reasoningEval].map(promptOf));
  const chatTrain = split(opts.chatTrain, rng(STREAMS.chatTrain), 'ct', chat, banned);
  const reasoningTrain = split(opts.reasoningTrain, rng(STREAMS.reasoningTrain), 'rt', reason, banned);
  return { world, chatTrain, chatEval, reasoningTrain, reasoningEval };
}

// ---------------------------------------------------------------- JSONL

// Keys in this order whatever order a record was built in, so the bytes depend only on the content.
const KEY_ORDER = ['id', 'conversations', 'from', 'value', 'answer', 'answer_char', 'answer_step', 'redundant_steps'];

function ordered(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(ordered);
  if (v === null || typeof v !== 'object') return v;
  const rank = (k: string) => (KEY_ORDER.includes(k) ? KEY_ORDER.indexOf(k) : KEY_ORDER.length);
  const keys = Object.keys(v).sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(keys.map((k) => [k, ordered((v as Record<string, unknown>)[k])]));
}

export function toJsonl(records: readonly object[]): string {
  return records.map((r) => JSON.stringify(ordered(r)) + '\n').join('');
}
