function id = tic()
% Part of csideploy: the partner of the driver's toc.m (no clock is read); see toc.m.
id = uint64(0);
end
