function y = pow2db(x)
% Power ratio in decibels (Octave core lacks it; the COST2100 model calls it). Part of csideploy.
y = 10 * log10(x);
end
