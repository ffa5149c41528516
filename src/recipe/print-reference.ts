// Prints the recipe reference table that docs/recipes.md carries (npm run recipe:reference).
import { recipeReference } from './recipe.ts';

console.log(recipeReference());
