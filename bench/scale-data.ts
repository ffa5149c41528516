// The scale bench's data: seeded multi-turn conversations as ShareGPT JSONL, long enough to fill the recipe's
// max_length like real reasoning chat (each at least `minTokens` under the qwen3-thinking template with the real
// Qwen3 tokenizer, counted, not estimated). Text comes from word lists and sentence templates (nothing is
// downloaded): a user brings notes on a project, the assistant thinks in <think>...</think> and answers with a
// plan, the user follows up, and so on until the conversation is long enough.
import fs from 'node:fs';
import path from 'node:path';
import type { Message } from '../src/data/chat.ts';
import { tokenizeConversation } from '../src/data/templates.ts';
import { loadTokenizer, type Tokenizer } from '../src/io/tokenizer.ts';

/** mulberry32, as src/util/random.ts, kept local so that the data stays fixed whatever src does with its Rng. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
}

interface Topic {
  project: string;
  goal: string[];
  nouns: string[];
  units: string[];
  problems: string[];
}

const TOPICS: Topic[] = [
  {
    project: 'a community vegetable garden behind the library',
    goal: ['plan the planting schedule', 'split the work between volunteers', 'keep the budget under control'],
    nouns: ['raised bed', 'compost pile', 'irrigation line', 'seed order', 'tool shed', 'tomato row', 'rain barrel', 'volunteer rota'],
    units: ['hours', 'square meters', 'liters', 'dollars'],
    problems: ['gets too much shade in the afternoon', 'floods after heavy rain', 'keeps getting eaten by rabbits'],
  },
  {
    project: 'migrating a small web service to a new database',
    goal: ['order the migration steps', 'reduce the downtime', 'decide what to test first'],
    nouns: ['schema', 'backup job', 'connection pool', 'read replica', 'feature flag', 'index', 'cron task', 'dashboard'],
    units: ['minutes', 'gigabytes', 'requests per second', 'queries'],
    problems: ['times out under load', 'returns stale results', 'locks the main table'],
  },
  {
    project: 'a two-week train trip through northern Italy',
    goal: ['build a day-by-day itinerary', 'keep the costs predictable', 'leave room for rest days'],
    nouns: ['rail pass', 'hotel booking', 'museum ticket', 'day trip', 'luggage', 'regional train', 'walking tour', 'budget sheet'],
    units: ['euros', 'hours', 'kilometers', 'nights'],
    problems: ['is sold out on the weekend', 'arrives too late for the connection', 'costs twice as much in August'],
  },
  {
    project: 'learning Spanish before starting a job in Madrid',
    goal: ['structure the daily practice', 'measure progress each week', 'balance speaking and grammar'],
    nouns: [
      'flashcard deck',
      'grammar drill',
      'podcast episode',
      'conversation partner',
      'vocabulary list',
      'writing journal',
      'practice test',
    ],
    units: ['minutes', 'words', 'lessons', 'weeks'],
    problems: ['feels repetitive after a week', 'is too fast to follow', 'does not cover the subjunctive'],
  },
  {
    project: 'renovating a small kitchen on a fixed budget',
    goal: ['sequence the contractors', 'pick the materials', 'avoid surprises in the electrical work'],
    nouns: ['countertop', 'cabinet', 'tile order', 'sink', 'permit', 'lighting plan', 'outlet', 'delivery window'],
    units: ['dollars', 'days', 'square feet', 'boxes'],
    problems: ['arrives damaged', 'does not fit the corner', 'needs a second inspection'],
  },
  {
    project: 'a data pipeline that cleans weekly sales reports',
    goal: ['make the pipeline reproducible', 'catch bad rows early', 'speed up the slowest step'],
    nouns: ['parser', 'validation rule', 'lookup table', 'output file', 'retry policy', 'unit test', 'summary chart', 'log message'],
    units: ['rows', 'seconds', 'megabytes', 'files'],
    problems: ['drops rows with accented names', 'double counts returns', 'fails silently on empty files'],
  },
  {
    project: 'training for a first half marathon in the spring',
    goal: ['build a weekly plan', 'avoid injuries', 'choose a realistic goal time'],
    nouns: ['long run', 'tempo session', 'rest day', 'shoe rotation', 'stretching routine', 'hill repeat', 'race pace', 'recovery week'],
    units: ['kilometers', 'minutes', 'sessions', 'weeks'],
    problems: ['leaves my knee sore the next day', 'clashes with late shifts', 'feels too easy after a month'],
  },
  {
    project: 'organizing a neighborhood book fair in the school gym',
    goal: ['plan the floor layout', 'recruit enough helpers', 'handle payments at the tables'],
    nouns: ['table map', 'donation box', 'signup sheet', 'price label', 'cash float', 'poster', 'reading corner', 'cleanup crew'],
    units: ['tables', 'volunteers', 'hours', 'books'],
    problems: ['overlaps with the football match', 'runs out of small change', 'blocks the fire exit'],
  },
];

const NAMES = ['Maria', 'Tom', 'Aiko', 'Daniel', 'Priya', 'Lukas', 'Fatima', 'Chen', 'Sofia', 'Omar', 'Grace', 'Mateo'];
const ADJ = ['cheaper', 'simpler', 'safer', 'quicker', 'quieter', 'sturdier', 'clearer', 'more flexible', 'more reliable', 'smaller'];
const VERBS = ['check', 'move', 'replace', 'schedule', 'measure', 'split', 'review', 'document', 'postpone', 'double-check', 'simplify'];
const ADVERBS = ['steadily', 'slowly', 'unexpectedly', 'quietly', 'noticeably', 'roughly', 'mostly', 'almost entirely'];
const TIMES = ['the end of the month', 'next Friday', 'the long weekend', 'the first inspection', 'the kickoff meeting', 'spring'];
const MONTHS = ['January', 'March', 'April', 'June', 'September', 'October', 'November'];
const OPENERS = ['Hi!', 'Hello,', 'Quick question.', 'I could use some help.', 'Hey there.', 'Good morning.'];
const SYSTEMS = [
  'You are a helpful assistant.',
  'You are a careful planning assistant. Think step by step before you answer.',
  'You are a friendly assistant who gives practical, concrete advice.',
];

/** One filled-in sentence about the topic. */
function factSentence(r: Rng, t: Topic): string {
  const n = () => r.pick(t.nouns);
  const u = () => r.pick(t.units);
  const forms = [
    () => `The ${n()} has changed ${r.pick(ADVERBS)} since ${r.pick(MONTHS)}, and ${r.pick(NAMES)} thinks the ${n()} should come first.`,
    () => `Right now the ${n()} takes about ${r.int(3, 90)} ${u()}, which is ${r.int(2, 40)} more than we planned.`,
    () => `${r.pick(NAMES)} offered to ${r.pick(VERBS)} the ${n()} before ${r.pick(TIMES)}, but only on weekdays.`,
    () => `Last time the ${n()} ${r.pick(t.problems)}, so we had to ${r.pick(VERBS)} the ${n()} twice.`,
    () => `We have roughly ${r.int(100, 2500)} ${u()} left in total and the ${n()} still needs a decision.`,
    () => `I would prefer something ${r.pick(ADJ)} for the ${n()}, even if the ${n()} costs a little more.`,
    () => `Nobody has looked at the ${n()} yet, and ${r.pick(NAMES)} is away until ${r.pick(TIMES)}.`,
  ];
  return r.pick(forms)();
}

function thinkingParagraph(r: Rng, t: Topic, goal: string): string {
  const n = () => r.pick(t.nouns);
  const a = r.int(4, 60);
  const b = r.int(2, 30);
  const unit = r.pick(t.units);
  const lines = [
    r.pick([
      `Okay, the user wants to ${goal} for ${t.project}.`,
      `Let me restate the goal: ${goal}.`,
      `So the real question is how to ${goal}.`,
    ]),
    `Let me start with the ${n()}, because everything else depends on it.`,
    `If the ${n()} needs ${a} ${unit} and the ${n()} needs another ${b}, that is ${a + b} ${unit} together, which leaves ${Math.max(0, 100 - a - b)} out of a hundred for the rest.`,
    r.pick([
      `Wait, they also said the ${n()} ${r.pick(t.problems)}, so I should plan around that.`,
      `Hmm, I am not sure the ${n()} is really the bottleneck; the ${n()} might matter more.`,
      `Actually, doing the ${n()} early is ${r.pick(ADJ)} because it does not block anything else.`,
    ]),
    factSentence(r, t),
    `One option is to ${r.pick(VERBS)} the ${n()} first and ${r.pick(VERBS)} the ${n()} afterwards.`,
    r.pick([
      `That seems reasonable, but let me check the order once more.`,
      `I think that works, as long as ${r.pick(NAMES)} can help.`,
      `The numbers add up, so the plan is consistent.`,
    ]),
  ];
  return lines.slice(0, r.int(4, lines.length)).join(' ');
}

/** An assistant turn: thinking paragraphs, then answer blocks (the last of either can be dropped to fit). */
interface Answer {
  think: string[];
  blocks: string[];
}

function assistantTurn(r: Rng, t: Topic, goal: string): Answer {
  const think = Array.from({ length: r.int(2, 3) }, () => thinkingParagraph(r, t, goal));
  const blocks = [
    r.pick([`Here is a plan to ${goal}:`, `Good question. A practical way to ${goal}:`, `Let's break it down so you can ${goal}.`]),
  ];
  const steps = r.int(3, 5);
  for (let i = 1; i <= steps; i++) {
    const verb = r.pick(VERBS);
    blocks.push(
      `${i}. **${verb[0].toUpperCase() + verb.slice(1)} the ${r.pick(t.nouns)}.** ${factSentence(r, t)} Keep it ${r.pick(ADJ)} and note the result in the ${r.pick(t.nouns)}.`,
    );
  }
  blocks.push(
    r.pick([
      `If you tell me more about the ${r.pick(t.nouns)}, I can ${r.pick(VERBS)} the details with you.`,
      `Would you like me to turn this into a checklist with dates?`,
      `Let me know how the first step goes and we can adjust the rest.`,
    ]),
  );
  return { think, blocks };
}

const assistantText = (a: Answer) => `<think>\n${a.think.join('\n\n')}\n</think>\n\n${a.blocks.join('\n\n')}`;

function followUp(r: Rng, t: Topic): string {
  const n = () => r.pick(t.nouns);
  return r.pick([
    `Thanks, that helps. What if the ${n()} ${r.pick(t.problems)}?`,
    `Could you explain the part about the ${n()} in more detail? ${factSentence(r, t)}`,
    `How would the plan change if we only had ${r.int(5, 80)} ${r.pick(t.units)} for the ${n()}?`,
    `${r.pick(NAMES)} just told me that the ${n()} ${r.pick(t.problems)}. Does that change the order?`,
    `Makes sense. Is it better to ${r.pick(VERBS)} the ${n()} or the ${n()} first?`,
  ]);
}

export interface ConversationStats {
  count: number;
  minTokens: number;
  meanTokens: number;
  maxTokens: number;
  meanTurns: number;
  /** Conversations longer than maxTokens (capture cuts them). */
  overMax: number;
}

/** One conversation of at least `minTokens` tokens, trimmed toward `maxTokens` where its last answer allows. */
function conversation(r: Rng, tok: Tokenizer, minTokens: number, maxTokens: number): { messages: Message[]; tokens: number } {
  const t = r.pick(TOPICS);
  const count = (m: Message[]) => tokenizeConversation(m, tok, { template: 'qwen3-thinking' }).ids.length;
  const notes = Array.from({ length: r.int(4, 8) }, () => factSentence(r, t)).join(' ');
  const messages: Message[] = [];
  if (r.next() < 0.7) messages.push({ role: 'system', content: r.pick(SYSTEMS) });
  const goal = r.pick(t.goal);
  messages.push({
    role: 'user',
    content: `${r.pick(OPENERS)} I'm working on ${t.project}. Here are my notes so far:\n\n${notes}\n\nCan you help me ${goal}?`,
  });
  let last = assistantTurn(r, t, goal);
  messages.push({ role: 'assistant', content: assistantText(last) });
  let tokens = count(messages);
  while (tokens < minTokens) {
    messages.push({ role: 'user', content: followUp(r, t) });
    last = assistantTurn(r, t, r.pick(t.goal));
    messages.push({ role: 'assistant', content: assistantText(last) });
    tokens = count(messages);
  }
  // Shorten the last answer (closing blocks first, then thinking paragraphs) while that keeps the conversation
  // long enough: fewer conversations get cut at max_length.
  while (tokens > maxTokens && (last.blocks.length > 2 || last.think.length > 1)) {
    const shorter =
      last.blocks.length > 2
        ? { think: last.think, blocks: last.blocks.slice(0, -1) }
        : { think: last.think.slice(0, -1), blocks: last.blocks };
    const trial = [...messages.slice(0, -1), { role: 'assistant' as const, content: assistantText(shorter) }];
    const n = count(trial);
    if (n < minTokens) break;
    last = shorter;
    messages.splice(0, messages.length, ...trial);
    tokens = n;
  }
  return { messages, tokens };
}

export interface DataFiles {
  train: string;
  eval: string;
  trainStats: ConversationStats;
  evalStats: ConversationStats;
}

/**
 * Writes `train.jsonl` and `eval.jsonl` (ShareGPT) into `dir`, tokenizing every conversation with the model
 * folder's tokenizer; throws when a conversation misses `minTokens` (a generator bug, not bad luck).
 */
export function writeConversations(
  dir: string,
  modelDir: string,
  o: { seed: number; train: number; eval: number; minTokens: number; maxTokens: number },
): DataFiles {
  const tok = loadTokenizer(modelDir);
  fs.mkdirSync(dir, { recursive: true });
  const split = (name: string, n: number, seed: number) => {
    const r = new Rng(seed);
    const lines: string[] = [];
    const lengths: number[] = [];
    let turns = 0;
    for (let i = 0; i < n; i++) {
      const c = conversation(r, tok, o.minTokens, o.maxTokens);
      if (c.tokens < o.minTokens) throw new Error(`${name} conversation ${i}: ${c.tokens} tokens, fewer than ${o.minTokens}`);
      lengths.push(c.tokens);
      turns += c.messages.filter((m) => m.role !== 'system').length;
      const from = { system: 'system', user: 'human', assistant: 'gpt' } as const;
      const conversations = c.messages.map((m) => ({ from: from[m.role], value: m.content }));
      lines.push(JSON.stringify({ id: `scale-${name}-${String(i).padStart(4, '0')}`, conversations }));
    }
    const file = path.join(dir, `${name}.jsonl`);
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const stats: ConversationStats = {
      count: n,
      minTokens: Math.min(...lengths),
      meanTokens: lengths.reduce((a, b) => a + b, 0) / n,
      maxTokens: Math.max(...lengths),
      meanTurns: turns / n,
      overMax: lengths.filter((x) => x > o.maxTokens).length,
    };
    return { file, stats };
  };
  const tr = split('train', o.train, o.seed);
  const ev = split('eval', o.eval, o.seed + 1_000_003);
  return { train: tr.file, eval: ev.file, trainStats: tr.stats, evalStats: ev.stats };
}
