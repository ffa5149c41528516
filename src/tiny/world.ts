// A small generated world: the facts the tiny target learns from its chat corpus. Everything comes
// from one seed, so the corpus (and the answers it must get right) can be regenerated exactly.
import { Rng } from '../util/random.ts';

export type Gender = 'female' | 'male';

export interface Person {
  name: string;
  gender: Gender;
  city: string;
  job: string;
  pet: string;
  colour: string;
  age: number;
}

export interface World {
  seed: number;
  people: Person[];
  /** The pools the people were drawn from (questions may name a city nobody lives in). */
  cities: readonly string[];
  jobs: readonly string[];
  pets: readonly string[];
  colours: readonly string[];
}

// Fixed pools, single words only, so each is one word-level token (with its leading space).
const FEMALE = [
  'Alice',
  'Emma',
  'Clara',
  'Nora',
  'Julia',
  'Sofia',
  'Laura',
  'Hannah',
  'Maria',
  'Lena',
  'Olivia',
  'Grace',
  'Ruth',
  'Anna',
  'Eva',
  'Mia',
  'Zoe',
  'Ella',
  'Ivy',
  'Rosa',
  'Vera',
  'Iris',
  'Lucy',
  'Kate',
] as const;
const MALE = [
  'Bob',
  'David',
  'Tom',
  'Peter',
  'Jack',
  'Oscar',
  'Leo',
  'Max',
  'Paul',
  'Sam',
  'Hugo',
  'Felix',
  'Noah',
  'Adam',
  'Ben',
  'Carl',
  'Dan',
  'Eric',
  'Frank',
  'Henry',
  'Ivan',
  'Luke',
  'Mark',
  'Owen',
] as const;
export const CITIES = [
  'Paris',
  'London',
  'Berlin',
  'Madrid',
  'Rome',
  'Vienna',
  'Oslo',
  'Lisbon',
  'Dublin',
  'Prague',
  'Athens',
  'Warsaw',
] as const;
export const JOBS = [
  'baker',
  'teacher',
  'doctor',
  'nurse',
  'farmer',
  'pilot',
  'engineer',
  'painter',
  'chef',
  'writer',
  'lawyer',
  'architect',
] as const;
export const PETS = ['dog', 'cat', 'rabbit', 'parrot', 'hamster', 'turtle', 'goldfish', 'horse'] as const;
export const COLOURS = ['red', 'blue', 'green', 'yellow', 'purple', 'orange', 'black', 'white'] as const;

export const WORLD_SIZE = 40;

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

/** A well-mixed seed for independent stream `stream` of `seed` (nearby seeds must not give related streams). */
export function streamSeed(seed: number, stream: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** `seed` picks which 40 of the 48 names appear and every attribute; the same seed gives the same world. */
export function makeWorld(seed: number): World {
  const rng = new Rng(streamSeed(seed, 0)); // stream 0: the world; the corpus splits use others
  const names: { name: string; gender: Gender }[] = [
    ...FEMALE.map((name) => ({ name, gender: 'female' as const })),
    ...MALE.map((name) => ({ name, gender: 'male' as const })),
  ];
  const chosen = rng.shuffle(names).slice(0, WORLD_SIZE);
  const people = chosen.map(({ name, gender }) => ({
    name,
    gender,
    city: pick(rng, CITIES),
    job: pick(rng, JOBS),
    pet: pick(rng, PETS),
    colour: pick(rng, COLOURS),
    age: 20 + rng.int(51),
  }));
  return { seed, people, cities: CITIES, jobs: JOBS, pets: PETS, colours: COLOURS };
}

export function findPerson(world: World, name: string): Person | undefined {
  return world.people.find((p) => p.name === name);
}
