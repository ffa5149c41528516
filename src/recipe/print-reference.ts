// Prints the recipe reference table that the README carries (npm run recipe:reference).
import { recipeReference } from './recipe.ts';

console.log(recipeReference());
